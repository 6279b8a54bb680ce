"""Rendering fields through a pinhole camera: one object at a spherical pose (`render`), any camera-to-world
(`render_view`), or several objects placed in one image with mutual occlusion (`render_scene`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from neuralsim.cameras import Intrinsics, camera_rays, pixel_grid, spherical_to_c2w
from neuralsim.render.volume import ObjectRays, RayFns, RenderConfig, render_rays


class Appearances(Protocol):
    """A field's lighting conditions as appearance embeddings."""

    def resolve(self, appearance: Tensor | int) -> Tensor:
        """An anchor index k, or weights (K,) on the simplex mixing the anchors → embedding (E,)."""


class RadianceField(Protocol):
    """What the renderer asks of a field (`fields.Field` is one): its `RayFns` under an appearance embedding, the
    table that gives that embedding, and its parameters, whose dtype and device the render takes."""

    appearance: Appearances

    def fns(self, appearance: Tensor) -> RayFns:
        """Bind an appearance embedding (E,), or one per ray (R, E)."""

    def parameters(self) -> Iterator[Tensor]: ...


@dataclass
class RenderOutput:
    """(H, W, …) for a full image, (N, …) when `rays` picked N pixels."""

    rgb: Tensor  # (…, 3) premultiplied RGB in [0, 1] (over black); `composite` puts it over a background
    alpha: Tensor  # (…,) opacity in [0, 1]
    depth: Tensor  # (…,) distance from the camera along the ray, object units
    object_alpha: Tensor  # (O, …) per-object opacity after occlusion by the others (boxes, masks)
    object_coverage: Tensor  # (O, …) per-object opacity as if alone (how much of each object the others hide)


@dataclass
class Placement:
    """One object in a scene: its field, the viewing pose and lighting, and a shift in the image plane.

    The object is seen from azimuth/elevation (degrees) and radius (object units) as in `cameras`;
    `shift_xy` (camera units at the object's depth) moves it across the image. `appearance` is an
    anchor index or weights (K,) on the simplex mixing the field's anchors.
    """

    field: RadianceField
    azimuth_deg: Tensor | float
    elevation_deg: Tensor | float
    radius: Tensor | float
    appearance: Tensor | int = 0
    shift_xy: Tensor | tuple[float, float] = (0.0, 0.0)


def _as_tensor(value: Tensor | float | tuple, dtype: torch.dtype, device: torch.device) -> Tensor:
    return value.to(device=device) if isinstance(value, Tensor) else torch.tensor(value, dtype=dtype, device=device)


def _field_dtype_device(field: RadianceField) -> tuple[torch.dtype, torch.device]:
    parameter = next(field.parameters())
    return parameter.dtype, parameter.device


def placement_c2w(placement: Placement) -> Tensor:
    """Camera-to-object (4, 4) of a placement: the inverse of `cameras.object_to_camera`."""
    dtype, device = _field_dtype_device(placement.field)
    az, el, r, shift = (_as_tensor(v, dtype, device) for v in (placement.azimuth_deg, placement.elevation_deg,
                                                                placement.radius, placement.shift_xy))
    c2w = spherical_to_c2w(az, el, r)
    # object_to_camera adds the shift to camera-frame positions; undoing it moves the centre by −R·shift.
    translation = c2w[:3, 3] - c2w[:3, :2] @ shift.to(c2w.dtype)
    return torch.cat([torch.cat([c2w[:3, :3], translation[:, None]], dim=1), c2w[3:]], dim=0)


def intrinsics_for(size: int | tuple[int, int], fov_deg: float) -> Intrinsics:
    """Square-pixel intrinsics for `size` (pixels, or (width, height)) and horizontal field of view."""
    width, height = (size, size) if isinstance(size, int) else size
    return Intrinsics.from_fov(width, height, fov_deg)


def object_rays(field: RadianceField, c2w: Tensor, intrinsics: Intrinsics, appearance: Tensor | int,
                rays: Tensor | None = None) -> ObjectRays:
    """The camera's rays (all pixels, or the flat row-major pixel indices `rays`) in the field's frame."""
    dtype, device = _field_dtype_device(field)
    pixels = pixel_grid(intrinsics, device=device)  # (H*W, 2)
    if rays is not None:
        pixels = pixels[rays.to(device)]
    origins, dirs = camera_rays(c2w.to(device=device, dtype=dtype), intrinsics, pixels)
    return ObjectRays(field.fns(field.appearance.resolve(appearance)), origins, dirs)


def _shaped(out, intrinsics: Intrinsics, rays: Tensor | None) -> RenderOutput:
    shape = (intrinsics.height, intrinsics.width) if rays is None else (len(rays),)
    return RenderOutput(rgb=out.rgb.reshape(*shape, 3), alpha=out.alpha.reshape(shape), depth=out.depth.reshape(shape),
                        object_alpha=out.object_alpha.reshape(-1, *shape),
                        object_coverage=out.object_coverage.reshape(-1, *shape))


def _joined(parts: list[RenderOutput], shape: tuple[int, ...]) -> RenderOutput:
    """Outputs of consecutive ray chunks as one output of `shape`."""
    return RenderOutput(rgb=torch.cat([p.rgb for p in parts]).reshape(*shape, 3),
                        alpha=torch.cat([p.alpha for p in parts]).reshape(shape),
                        depth=torch.cat([p.depth for p in parts]).reshape(shape),
                        object_alpha=torch.cat([p.object_alpha for p in parts], dim=1).reshape(-1, *shape),
                        object_coverage=torch.cat([p.object_coverage for p in parts], dim=1).reshape(-1, *shape))


def render_view(field: RadianceField, c2w: Tensor, intrinsics: Intrinsics, appearance: Tensor | int,
                rays: Tensor | None = None, *, config: RenderConfig | None = None,
                generator: torch.Generator | None = None) -> RenderOutput:
    """Render one field through a camera given by its camera-to-object matrix (4, 4) (OpenGL)."""
    out = render_rays([object_rays(field, c2w, intrinsics, appearance, rays)], config, generator)
    return _shaped(out, intrinsics, rays)


def render_scene(placements: Sequence[Placement], size: int | tuple[int, int], fov_deg: float,
                 rays: Tensor | None = None, *, config: RenderConfig | None = None,
                 generator: torch.Generator | None = None) -> RenderOutput:
    """Render several placed objects into one image, merged by depth along each ray (mutual occlusion).

    Differentiable w.r.t. every tensor in the placements (pose, shift, appearance weights).
    """
    if not placements:
        raise ValueError("render_scene needs at least one placement")
    intrinsics = intrinsics_for(size, fov_deg)
    chunk = (config or RenderConfig()).chunk_rays
    pixels = intrinsics.width * intrinsics.height if rays is None else len(rays)
    if not torch.is_grad_enabled() and generator is None and pixels > chunk:
        # Rays are independent: render them a chunk at a time (a generator's draws would depend on the chunking).
        ids = torch.arange(pixels) if rays is None else rays
        parts = [render_scene(placements, size, fov_deg, ids[i:i + chunk], config=config) for i in range(0, pixels, chunk)]
        return _joined(parts, (intrinsics.height, intrinsics.width) if rays is None else (pixels,))
    objects = [object_rays(p.field, placement_c2w(p), intrinsics, p.appearance, rays) for p in placements]
    return _shaped(render_rays(objects, config, generator), intrinsics, rays)


def render(field: RadianceField, azimuth_deg: Tensor | float, elevation_deg: Tensor | float, radius: Tensor | float,
           appearance: Tensor | int, size: int | tuple[int, int], fov_deg: float, rays: Tensor | None = None, *,
           config: RenderConfig | None = None, generator: torch.Generator | None = None) -> RenderOutput:
    """Render one object seen from (azimuth°, elevation°, radius) under `appearance` (anchor index, or
    weights (K,) on the simplex); differentiable w.r.t. the pose and the weights.

    `rays` picks pixels by flat row-major index (then outputs are (N, …)); no randomness unless a
    generator is passed, so two calls with equal inputs give identical pixels.
    """
    return render_scene([Placement(field, azimuth_deg, elevation_deg, radius, appearance)], size, fov_deg, rays,
                        config=config, generator=generator)
