"""One camera convention for the whole project (DESIGN.md §4).

World +z is up; objects sit at the origin inside [-1, 1]³. A camera at azimuth φ (degrees, from +x
towards +y), elevation ρ (degrees above the xy-plane) and radius r looks at the origin with +z up.
Camera-to-world matrices follow OpenGL/nerfstudio: the camera looks down its −z, +y is up, +x right.
All functions are differentiable torch code (the pose is optimised through them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

WORLD_UP = (0.0, 0.0, 1.0)


def spherical_to_position(azimuth_deg: Tensor, elevation_deg: Tensor, radius: Tensor) -> Tensor:
    """Camera centre (..., 3) for spherical coordinates around the origin."""
    az, el = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    return torch.stack(
        [radius * torch.cos(el) * torch.cos(az), radius * torch.cos(el) * torch.sin(az), radius * torch.sin(el)], dim=-1
    )


def look_at(position: Tensor, target: Tensor | None = None) -> Tensor:
    """Camera-to-world (..., 4, 4) of a camera at `position` looking at `target` (origin) with world +z up.

    Elevation must stay inside (-90°, 90°): straight up or down the up vector is undefined.
    """
    if target is None:
        target = torch.zeros_like(position)
    forward = torch.nn.functional.normalize(target - position, dim=-1)  # camera −z
    up = torch.tensor(WORLD_UP, dtype=position.dtype, device=position.device).expand_as(forward)
    right = torch.nn.functional.normalize(torch.cross(forward, up, dim=-1), dim=-1)  # camera +x
    cam_up = torch.cross(right, forward, dim=-1)  # camera +y
    rot = torch.stack([right, cam_up, -forward], dim=-1)  # columns: x, y, z axes in world
    c2w = torch.zeros(*position.shape[:-1], 4, 4, dtype=position.dtype, device=position.device)
    c2w[..., :3, :3] = rot
    c2w[..., :3, 3] = position
    c2w[..., 3, 3] = 1.0
    return c2w


def spherical_to_c2w(azimuth_deg, elevation_deg, radius) -> Tensor:
    """Camera-to-world (..., 4, 4) for azimuth/elevation in degrees and radius in object units."""
    az, el, r = torch.broadcast_tensors(*(torch.as_tensor(v, dtype=torch.float32) if not isinstance(v, Tensor) else v
                                          for v in (azimuth_deg, elevation_deg, radius)))
    return look_at(spherical_to_position(az, el, r))


def c2w_to_spherical(c2w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(azimuth° in [0, 360), elevation°, radius) of the camera centre of `c2w` (..., 4, 4)."""
    p = c2w[..., :3, 3]
    radius = p.norm(dim=-1)
    azimuth = torch.rad2deg(torch.atan2(p[..., 1], p[..., 0])) % 360.0
    elevation = torch.rad2deg(torch.asin((p[..., 2] / radius).clamp(-1.0, 1.0)))
    return azimuth, elevation, radius


def object_to_camera(azimuth_deg, elevation_deg, radius, shift_xy=(0.0, 0.0)) -> Tensor:
    """Object-to-camera (..., 4, 4) that shows the object as seen from (φ, ρ, r), moved by `shift_xy`.

    Used to place several objects in one image: each object has its own viewing pose; `shift_xy`
    (camera units, at the object's depth) moves it across the image plane.
    """
    w2c = torch.linalg.inv(spherical_to_c2w(azimuth_deg, elevation_deg, radius))
    shift = torch.as_tensor(shift_xy, dtype=w2c.dtype, device=w2c.device)
    w2c = w2c.clone()
    w2c[..., 0, 3] = w2c[..., 0, 3] + shift[..., 0]
    w2c[..., 1, 3] = w2c[..., 1, 3] + shift[..., 1]
    return w2c


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels; pixel (i, j) has its centre at (i + 0.5, j + 0.5)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, fov_deg: float) -> Intrinsics:
        """Square pixels, principal point at the image centre, `fov_deg` the horizontal field of view."""
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        if not 0.0 < fov_deg < 180.0:
            raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
        f = 0.5 * width / math.tan(math.radians(fov_deg) / 2.0)
        return cls(fx=f, fy=f, cx=width / 2.0, cy=height / 2.0, width=width, height=height)

    @property
    def fov_x_deg(self) -> float:
        return math.degrees(2.0 * math.atan(0.5 * self.width / self.fx))

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera at another resolution."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    def matrix(self) -> Tensor:
        return torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])


def pixel_grid(intrinsics: Intrinsics, device=None) -> Tensor:
    """Pixel-centre coordinates (H*W, 2) as (u, v) in row-major order."""
    v, u = torch.meshgrid(
        torch.arange(intrinsics.height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(intrinsics.width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def camera_rays(c2w: Tensor, intrinsics: Intrinsics, pixels: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """World-space ray origins and unit directions (N, 3) through `pixels` (N, 2) (default: all, row-major)."""
    if pixels is None:
        pixels = pixel_grid(intrinsics, device=c2w.device)
    pixels = pixels.to(c2w.dtype)
    dirs_cam = torch.stack(
        [
            (pixels[:, 0] - intrinsics.cx) / intrinsics.fx,
            -(pixels[:, 1] - intrinsics.cy) / intrinsics.fy,
            -torch.ones_like(pixels[:, 0]),
        ],
        dim=-1,
    )
    dirs = torch.nn.functional.normalize(dirs_cam @ c2w[:3, :3].T, dim=-1)
    origins = c2w[:3, 3].expand_as(dirs)
    return origins, dirs


def project(points: Tensor, c2w: Tensor, intrinsics: Intrinsics) -> Tensor:
    """Pixel coordinates (N, 2) of world points (N, 3) seen by the camera `c2w`."""
    w2c = torch.linalg.inv(c2w)
    p = points @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -p[:, 2]
    u = intrinsics.fx * p[:, 0] / depth + intrinsics.cx
    v = -intrinsics.fy * p[:, 1] / depth + intrinsics.cy
    return torch.stack([u, v], dim=-1)


def is_rigid(matrix, atol: float = 1e-3) -> bool:
    """True when a 4x4 matrix is a rotation (orthonormal, det +1) plus translation with last row 0 0 0 1."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    if m.shape != (4, 4) or not torch.isfinite(m).all():
        return False
    rot = m[:3, :3]
    eye = torch.eye(3, dtype=torch.float64)
    return bool(
        torch.allclose(rot.T @ rot, eye, atol=atol)
        and abs(torch.linalg.det(rot).item() - 1.0) < atol
        and torch.allclose(m[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64), atol=atol)
    )
