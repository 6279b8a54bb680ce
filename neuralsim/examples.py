"""A newcomer's example: "photos" from a foreign domain to learn training data for.

The training renders of a project are square, taken with a 40° lens over procedural backgrounds, clean. These photos
differ in every way a real camera would: 4:3 frames from a longer lens, two to four objects per photo hiding one
another, photographic backgrounds, sensor noise, blur and JPEG — and in several render factors at once (seen from
higher up and nearer, all in one warm light, two objects from one side only). The distribution they are drawn from is
written beside them in the bins ψ uses, so it can serve as an oracle ψ.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from neuralsim.assets.camera_effects import CameraEffects
from neuralsim.assets.scenes import SceneSetConfig, make_scene_set
from neuralsim.data.backgrounds import PHOTOS
from neuralsim.errors import UserError
from neuralsim.learn.project import WIDE_RANGES
from neuralsim.runtime import atomic_write_json, staged_output_dir
from neuralsim.sampling.bins import FACTORS, FactorBins, LightingWeights, ObjectDistribution

EXAMPLE_OBJECTS = ["002_master_chef_can", "003_cracker_box", "019_pitcher_base", "035_power_drill"]
"""Four visually distinct built-in objects: a can, a box, a pitcher and a drill."""
EXAMPLE_BINS = {"azimuth": 8, "elevation": 4, "radius": 4}
"""Bins per factor over a project's default ranges (`WIDE_RANGES`: azimuth 0–360°, elevation 0–60°, radius 5–15):
the layout of a ψ that can express the photos' distribution."""
EXAMPLE_LIGHTING = ["studio", "warm_left", "cool_right", "dim_top"]
"""The lighting conditions the fields are fitted under; every photo is lit by one of them."""
PHOTO_LIGHTING = "warm_left"
"""The one lighting condition of every photo."""
SIDE_VIEWED = {"003_cracker_box": 2, "035_power_drill": 2}
"""Objects photographed from one quarter of the circle only: the first of two adjacent azimuth bins (2: 90–180°)."""
PHOTO_CAMERA = CameraEffects(noise_std=0.01, blur_sigma_px=0.8, jpeg_quality=80)
"""The photos' camera: grainy shadows, slightly soft, JPEG at quality 80."""
PHOTO_FOV_DEG = 36.0
"""The photos' horizontal field of view: a longer lens than the training renders' 40°. Letterboxing keeps the photo's
width, so an object at radius r here looks as it would at r·tan(18°)/tan(20°) ≈ 0.89·r in a training render: the
photos' 5–10 is 4.5–8.9 there, the nearer half of domain randomisation's 5–15."""
PHOTO_MAX_SHIFT = 0.3
"""How far from the centre an object may sit (fraction of the width; a training render's own object 0.15, the others beside it 0.3)."""


def target_distributions() -> dict[str, ObjectDistribution]:
    """Each example object's distribution in the photos: elevation in the upper half of its range (30–60°; mostly
    45–60°), radius in the nearer half (5–10), lit by `PHOTO_LIGHTING` only, and for the objects of
    `SIDE_VIEWED` the azimuth on one quarter of the circle (uniform otherwise)."""
    elevation = np.array([0.0, 0.0, 0.4, 0.6])  # 0–15, 15–30, 30–45, 45–60°
    radius = np.array([0.5, 0.5, 0.0, 0.0])  # 5–7.5, 7.5–10, 10–12.5, 12.5–15
    lighting = np.array([float(n == PHOTO_LIGHTING) for n in EXAMPLE_LIGHTING])
    out = {}
    for obj in EXAMPLE_OBJECTS:
        azimuth = np.full(EXAMPLE_BINS["azimuth"], 1.0 / EXAMPLE_BINS["azimuth"])
        if obj in SIDE_VIEWED:
            azimuth = np.zeros(EXAMPLE_BINS["azimuth"])
            azimuth[[SIDE_VIEWED[obj], SIDE_VIEWED[obj] + 1]] = 0.5
        probs = {"azimuth": azimuth, "elevation": elevation, "radius": radius}
        factors = {f: FactorBins(*WIDE_RANGES[f], probs[f].copy(), circular=f == "azimuth") for f in FACTORS}
        out[obj] = ObjectDistribution(factors, LightingWeights(list(EXAMPLE_LIGHTING), lighting.copy()))
    return out


def example_config(photos: int = 60, width: int = 320, height: int = 240, seed: int = 0, spp: int = 16,
                   objects_per_image: tuple[int, int] = (2, 4), max_shift: float = PHOTO_MAX_SHIFT) -> SceneSetConfig:
    """The scene set of `make_example_photos`."""
    return SceneSetConfig(objects=list(EXAMPLE_OBJECTS), images=photos, size=width, height=height, fov_deg=PHOTO_FOV_DEG,
                          objects_per_image=objects_per_image, max_shift=max_shift, distributions=target_distributions(),
                          spp=spp, backgrounds=PHOTOS, camera=dataclasses.replace(PHOTO_CAMERA), name="photos", seed=seed)


def make_example_photos(out: Path, photos: int = 60, width: int = 320, height: int = 240, seed: int = 0, spp: int = 16,
                        overwrite: bool = False, device: str = "cpu", objects_per_image: tuple[int, int] = (2, 4),
                        max_shift: float = PHOTO_MAX_SHIFT) -> Path:
    """Write `photos` labelled example photos into `out` as a COCO set (images/*.jpg + annotations.json), with the
    distribution they were drawn from as `target-distribution.json` (a distribution file, readable by
    `load_distributions`, in the bins of `EXAMPLE_BINS`: usable as an oracle ψ)."""
    if photos <= 0:
        raise UserError(f"The number of photos must be positive, got {photos}.")
    cfg = example_config(photos, width, height, seed, spp, objects_per_image, max_shift)
    cfg.validate()
    with staged_output_dir(out, overwrite) as stage:
        make_scene_set(cfg, stage, overwrite=True, device=device)
        atomic_write_json(stage / "target-distribution.json",
                          {"objects": {o: d.to_json() for o, d in cfg.distributions.items()}})
    return Path(out)


def oracle_distributions(training_fov_deg: float = 40.0) -> dict[str, ObjectDistribution]:
    """`target_distributions` as a training render must draw them to look like the photos: the same in every factor
    but radius, which the photos' longer lens makes look nearer. A radius r in the photos is r·tan(18°)/tan(20°) in a
    training render (`PHOTO_FOV_DEG`); each photo bin's mass, uniform over the bin, is spread over the training
    bins it lands in, and what falls outside the range goes to the nearest end bin."""
    scale = np.tan(np.radians(PHOTO_FOV_DEG) / 2) / np.tan(np.radians(training_fov_deg) / 2)
    out = {}
    for obj, dist in target_distributions().items():
        radius = dist.factors["radius"]
        edges = np.linspace(radius.low, radius.high, len(radius.probs) + 1)
        probs = np.zeros(len(radius.probs))
        for a, b, mass in zip(edges[:-1] * scale, edges[1:] * scale, radius.probs):
            inner = np.clip(np.minimum(edges[1:], b) - np.maximum(edges[:-1], a), 0.0, None)
            inner[0] += max(0.0, min(b, edges[0]) - a)
            inner[-1] += max(0.0, b - max(a, edges[-1]))
            probs += mass * inner / (b - a)
        factors = dict(dist.factors) | {"radius": dataclasses.replace(radius, probs=probs)}
        out[obj] = dataclasses.replace(dist, factors=factors)
    return out
