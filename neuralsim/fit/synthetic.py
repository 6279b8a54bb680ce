"""Analytic test captures made in code: a colour-patterned sphere ray-cast in numpy under a few lighting
conditions, written as a neuralsim capture or as a plain nerfstudio capture (RGB images + mask files).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neuralsim.cameras import Intrinsics, camera_rays, spherical_to_c2w
from neuralsim.data.transforms import Frame, write_transforms
from neuralsim.runtime import atomic_save_png, atomic_write_json

SPHERE_RADIUS = 0.6
LIGHTING_TINTS = np.array([[1.0, 1.0, 1.0], [1.0, 0.7, 0.5], [0.5, 0.7, 1.0], [0.6, 0.6, 0.6]])
SUPERSAMPLING = 2


def sphere_rgba(c2w: np.ndarray, intrinsics: Intrinsics, lighting: int) -> np.ndarray:
    """Float (H, W, 4) straight RGBA of the patterned sphere seen by `c2w` under lighting condition `lighting`."""
    fine = intrinsics.scaled(intrinsics.width * SUPERSAMPLING, intrinsics.height * SUPERSAMPLING)
    origins, dirs = (x.numpy().astype(np.float64) for x in camera_rays(torch.as_tensor(c2w, dtype=torch.float64), fine))
    b = (origins * dirs).sum(-1)
    disc = b**2 - ((origins**2).sum(-1) - SPHERE_RADIUS**2)
    hit = disc > 0
    t = -b - np.sqrt(np.where(hit, disc, 0.0))
    normal = (origins + t[:, None] * dirs) / SPHERE_RADIUS  # (N, 3)
    stripes = 0.5 + 0.5 * np.sign(np.sin(6.0 * np.arctan2(normal[:, 1], normal[:, 0])))
    base = np.stack([0.2 + 0.7 * stripes, 0.3 + 0.4 * (normal[:, 2] > 0), 0.8 - 0.6 * stripes], axis=-1)
    rgb = np.clip(base * LIGHTING_TINTS[lighting] * (0.55 + 0.45 * np.clip(normal[:, 2], 0.0, 1.0))[:, None], 0, 1)
    rgba = np.concatenate([rgb * hit[:, None], hit[:, None].astype(np.float64)], axis=-1)
    rgba = rgba.reshape(intrinsics.height, SUPERSAMPLING, intrinsics.width, SUPERSAMPLING, 4).mean(axis=(1, 3))
    rgba[..., :3] /= np.maximum(rgba[..., 3:], 1e-8)  # back to straight colour
    return rgba


def _poses(count: int, seed: int) -> list[np.ndarray]:
    """Camera-to-world (4, 4) float64 of `count` views at radius 4, azimuth uniform, elevation in [-10°, 60°)."""
    rng = np.random.default_rng(seed)
    azimuth, elevation = rng.uniform(0, 360, count), rng.uniform(-10, 60, count)
    c2ws = spherical_to_c2w(torch.tensor(azimuth), torch.tensor(elevation), torch.full((count,), 4.0, dtype=torch.float64))
    return list(c2ws.numpy())


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def write_sphere_capture(out: str | Path, *, views: int = 24, size: int = 24, lightings: int = 1, fov_deg: float = 40.0,
                         seed: int = 0) -> Path:
    """A neuralsim capture (RGBA PNGs, appearance ids, splits: every 7th view is a test view)."""
    out = Path(out)
    intrinsics = Intrinsics.from_fov(size, size, fov_deg)
    frames = []
    for i, c2w in enumerate(_poses(views, seed)):
        lighting = i % lightings
        atomic_save_png(out / f"images/{i:03d}.png", _to_uint8(sphere_rgba(c2w, intrinsics, lighting)))
        frames.append(Frame(f"images/{i:03d}.png", c2w, lighting))
    test = [i for i in range(views) if i % 7 == 6]  # every 7th view, so test views cover every lighting
    splits = {"train": [i for i in range(views) if i not in test], "val": test, "test": test}
    meta = {"object": "sphere", "appearance_names": [f"tint_{k}" for k in range(lightings)]}
    write_transforms(out / "transforms.json", intrinsics, frames, splits, meta)
    return out


def write_plain_nerfstudio_capture(out: str | Path, *, views: int = 24, size: int = 24, fov_deg: float = 40.0,
                                   seed: int = 0) -> Path:
    """A plain nerfstudio capture: RGB PNGs with separate mask PNGs, no neuralsim fields, no splits."""
    out = Path(out)
    intrinsics = Intrinsics.from_fov(size, size, fov_deg)
    frames = []
    for i, c2w in enumerate(_poses(views, seed)):
        rgba = sphere_rgba(c2w, intrinsics, 0)
        atomic_save_png(out / f"images/frame_{i:05d}.png", _to_uint8(rgba[..., :3] * rgba[..., 3:]))
        atomic_save_png(out / f"masks/frame_{i:05d}.png", _to_uint8(rgba[..., 3]))
        frames.append({"file_path": f"images/frame_{i:05d}.png", "mask_path": f"masks/frame_{i:05d}.png",
                       "transform_matrix": c2w.tolist()})
    atomic_write_json(out / "transforms.json", {"fl_x": intrinsics.fx, "fl_y": intrinsics.fy, "cx": intrinsics.cx,
                                                "cy": intrinsics.cy, "w": size, "h": size, "frames": frames})
    return out
