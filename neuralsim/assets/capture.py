"""Posed multi-view captures for fitting radiance fields: RGBA PNGs and a nerfstudio `transforms.json`
with per-frame lighting (`appearance_id`) and train/val/test splits (DESIGN.md §4)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuralsim.assets.meshes import load_asset
from neuralsim.assets.renderer import GroundTruthRenderer, check_lighting
from neuralsim.cameras import Intrinsics, spherical_to_c2w
from neuralsim.color import linear_to_srgb, to_uint8
from neuralsim.data.transforms import Frame, write_transforms
from neuralsim.errors import UserError
from neuralsim.runtime import atomic_save_png, derive_seed, progress, staged_output_dir, to_plain


@dataclass
class CaptureConfig:
    """How to capture one object."""

    views: int = 100
    """Number of views."""
    size: int = 128
    """Image width and height in pixels."""
    fov_deg: float = 40.0
    """Horizontal field of view in degrees."""
    elevation_deg: tuple[float, float] = (-10.0, 60.0)
    """Elevation band in degrees above the horizon, range [-89, 89]."""
    radius: tuple[float, float] = (3.5, 5.0)
    """Camera distance band, in object units (the object fills [-1, 1]³)."""
    lighting: list[str] = field(default_factory=lambda: ["studio"])
    """Lighting conditions; view i uses condition i mod len(lighting)."""
    spp: int = 64
    """Path-tracing samples per pixel."""
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Fractions of views for train, val and test."""
    seed: int = 0

    def validate(self) -> None:
        if self.views < 3:
            raise UserError(f"--views must be at least 3 (train, val and test need one each), got {self.views}.")
        if self.size <= 0:
            raise UserError(f"--size must be a positive number of pixels, got {self.size}.")
        lo, hi = self.elevation_deg
        if not -89.0 <= lo <= hi <= 89.0:
            raise UserError(f"The elevation band must satisfy -89 ≤ low ≤ high ≤ 89 degrees, got [{lo}, {hi}].")
        if not 0.0 < self.radius[0] <= self.radius[1]:
            raise UserError(f"The radius band must be positive and ordered, got {list(self.radius)}.")
        if self.radius[0] <= 1.8:
            raise UserError(f"A camera radius of {self.radius[0]} would be inside the object's bounding sphere (√3).")
        check_lighting(self.lighting)


def capture_poses(cfg: CaptureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Azimuth uniform over the circle (stratified), elevation and radius uniform in their bands."""
    rng = np.random.default_rng(derive_seed(cfg.seed, "capture-poses"))
    azimuth = (np.arange(cfg.views) + rng.random(cfg.views)) * 360.0 / cfg.views
    azimuth = azimuth[rng.permutation(cfg.views)]
    elevation = rng.uniform(*cfg.elevation_deg, cfg.views)
    radius = rng.uniform(*cfg.radius, cfg.views)
    return azimuth, elevation, radius


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> dict[str, list[int]]:
    order = np.random.default_rng(derive_seed(seed, "capture-split")).permutation(n)
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    return {"train": sorted(order[n_val + n_test:].tolist()), "val": sorted(order[:n_val].tolist()),
            "test": sorted(order[n_val:n_val + n_test].tolist())}


def rgba_to_png(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied linear RGBA float → straight-alpha sRGB RGBA uint8 (the PNG convention)."""
    alpha = rgba[..., 3:4]
    straight = np.where(alpha > 1e-6, rgba[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    out = np.concatenate([linear_to_srgb(straight), alpha], axis=-1)
    return to_uint8(out)


def capture(obj: str, out: str | Path, cfg: CaptureConfig, overwrite: bool = False, device: str = "cpu") -> Path:
    """Render `cfg.views` views of `obj` (a built-in name or a mesh path) into the capture folder `out`."""
    cfg.validate()
    asset = load_asset(obj)
    intrinsics = Intrinsics.from_fov(cfg.size, cfg.size, cfg.fov_deg)
    renderer = GroundTruthRenderer(asset, intrinsics, spp=cfg.spp, lighting=cfg.lighting, device=device)
    azimuth, elevation, radius = capture_poses(cfg)
    frames = []
    with staged_output_dir(out, overwrite) as stage, progress() as bar:
        (stage / "images").mkdir()
        task = bar.add_task(f"capture {asset.name}", total=cfg.views)
        for i in range(cfg.views):
            c2w = spherical_to_c2w(float(azimuth[i]), float(elevation[i]), float(radius[i])).double().numpy()
            appearance = i % len(cfg.lighting)
            rgba, _ = renderer.render(c2w, cfg.lighting[appearance], seed=derive_seed(cfg.seed, "view", i))
            name = f"images/frame_{i:05d}.png"
            atomic_save_png(stage / name, rgba_to_png(rgba))
            frames.append(Frame(name, c2w, appearance))
            bar.advance(task)
        meta = {
            "object": asset.name, "source": asset.source, "scale": asset.scale, "center": asset.center.tolist(),
            "bounds": [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], "appearance_names": cfg.lighting,
            "renderer": f"mitsuba:{renderer.mi.variant()}", "config": to_plain(cfg),
            "views": [{"azimuth_deg": float(a), "elevation_deg": float(e), "radius": float(r)}
                      for a, e, r in zip(azimuth, elevation, radius)],
        }
        write_transforms(stage / "transforms.json", intrinsics, frames, split_indices(cfg.views, cfg.split, cfg.seed), meta)
    return Path(out)

