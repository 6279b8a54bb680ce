"""Labelled target-domain image sets from the ground-truth renderer (validation and test sets).

Each image shows one or more objects, each with azimuth, elevation, radius and lighting drawn from
its own binned distribution (the parameterisation ψ uses), placed across the image, composited by
depth over a background. Boxes come from each object's *visible* alpha, so occlusion is handled.
Images are square unless a height is given; an optional camera step (blur, sensor noise, JPEG) makes them look
photographed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuralsim.assets.camera_effects import CameraEffects
from neuralsim.assets.meshes import load_asset
from neuralsim.assets.renderer import GroundTruthRenderer, check_lighting
from neuralsim.cameras import Intrinsics, spherical_to_c2w
from neuralsim.color import linear_to_srgb, to_uint8
from neuralsim.data.backgrounds import background_source
from neuralsim.data.boxes import box_from_mask, mask_from_alpha
from neuralsim.data.coco import CocoBuilder
from neuralsim.errors import UserError
from neuralsim.runtime import (
    atomic_save_png,
    atomic_write_bytes,
    derive_seed,
    progress,
    read_json,
    safe_name,
    staged_output_dir,
    to_plain,
)
from neuralsim.sampling.bins import DistributionFile, ObjectDistribution
from neuralsim.schema import from_plain


@dataclass
class SceneSetConfig:
    """A labelled image set of some objects under per-object render-parameter distributions."""

    objects: list[str]
    """Built-in object names or mesh paths; COCO category ids follow this order from 1."""
    images: int = 100
    """Number of images."""
    size: int = 128
    """Image width in pixels, and height too unless `height` is given."""
    height: int | None = None
    """Image height in pixels; None: square images (`size` × `size`)."""
    fov_deg: float = 40.0
    """Horizontal field of view in degrees."""
    objects_per_image: tuple[int, int] = (1, 1)
    """Least and most objects in one image; image i always shows object i mod len(objects)."""
    max_shift: float = 0.15
    """Largest move of an object's centre from the image centre: horizontally a fraction of the image width,
    vertically the same fraction of the height."""
    distributions: dict[str, ObjectDistribution] = field(default_factory=dict)
    """Per-object render-parameter distribution; objects not listed are uniform."""
    spp: int = 32
    """Path-tracing samples per pixel."""
    backgrounds: str | None = None
    """Folder of background photos; "photos" crops the sample photos matplotlib ships; None draws seeded procedural
    backgrounds."""
    box_threshold: float = 0.5
    """Alpha above which a pixel belongs to an object's mask."""
    min_box_pixels: int = 9
    """Connected specks smaller than this are ignored; an object with fewer visible pixels gets no box."""
    camera: CameraEffects | None = None
    """Blur, sensor noise and JPEG applied to each composited image before it is written; None: the clean render,
    as PNG."""
    name: str = "scenes"
    """Name of the set (e.g. val, test): part of the seed, so val and test are separate draws, and of the image files'
    names, so a plain name (letters, digits, `_ - .`)."""
    seed: int = 0

    def validate(self) -> None:
        safe_name(self.name, "The scene set's --name")
        if not self.objects:
            raise UserError("A scene set needs at least one object.")
        if len(set(self.objects)) != len(self.objects):
            raise UserError(f"Objects are listed twice: {self.objects}.")
        if self.images <= 0:
            raise UserError(f"The number of images must be positive, got {self.images}.")
        if self.size <= 0:
            raise UserError(f"--size must be a positive number of pixels, got {self.size}.")
        if self.height is not None and self.height <= 0:
            raise UserError(f"The image height must be a positive number of pixels, got {self.height}.")
        if self.camera is not None:
            self.camera.validate()
        lo, hi = self.objects_per_image
        if not 1 <= lo <= hi <= len(self.objects):
            raise UserError(f"Objects per image must satisfy 1 ≤ min ≤ max ≤ {len(self.objects)}, got {lo}..{hi}.")
        unknown = set(self.distributions) - set(self.objects)
        if unknown:
            raise UserError(f"The distribution names object(s) {sorted(unknown)} that are not in the set {self.objects}.")
        for dist in self.distributions.values():
            check_lighting(dist.lighting.names)

    def distribution(self, obj: str) -> ObjectDistribution:
        return self.distributions.get(obj) or ObjectDistribution.uniform()

    @property
    def frame(self) -> tuple[int, int]:
        """(width, height) of the images in pixels."""
        return self.size, self.size if self.height is None else self.height

    def record(self) -> dict:
        """The settings as plain data for the COCO file; the image height and the camera step only where they are
        set, so a square, clean set records what it did before either existed."""
        plain = to_plain(self)
        for key in ("height", "camera"):
            if plain[key] is None:
                del plain[key]
        return plain


def load_distributions(path: str | Path) -> dict[str, ObjectDistribution]:
    """Read `{"objects": {name: {azimuth: {...}, elevation: …, radius: …, lighting: …}}}` (a ψ file works too)."""
    spec = from_plain(DistributionFile, read_json(path, "Distribution file"), f"Distribution file {path}")
    return {name: ObjectDistribution.from_spec(d) for name, d in spec.objects.items()}


@dataclass
class Placement:
    """Render parameters of one object in one image."""

    object: str
    azimuth_deg: float
    elevation_deg: float
    radius: float
    lighting: str
    shift_xy: tuple[float, float]  # camera units at the object's depth
    bins: dict[str, int]


def draw_placements(cfg: SceneSetConfig, index: int) -> list[Placement]:
    """The objects of image `index` and their render parameters, from the image's own seed."""
    rng = np.random.default_rng(derive_seed(cfg.seed, cfg.name, "image", index))
    first = cfg.objects[index % len(cfg.objects)]
    count = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    others = [o for o in cfg.objects if o != first]
    chosen = [first] + [others[i] for i in rng.permutation(len(others))[: count - 1]]
    tan_half = np.tan(np.radians(cfg.fov_deg) / 2)
    width, height = cfg.frame
    placements = []
    for obj in chosen:
        dist = cfg.distribution(obj)
        values, bins = {}, {}
        for factor, fb in dist.factors.items():
            v, b = fb.sample(rng, 1)
            values[factor], bins[factor] = float(v[0]), int(b[0])
        light = int(dist.lighting.sample(rng, 1)[0])
        shift_px = rng.uniform(-cfg.max_shift, cfg.max_shift, 2)  # fraction of the image width
        shift_px[1] *= height / width  # vertically the same fraction of the height (× 1 for square images)
        shift = tuple(float(s * 2 * tan_half * values["radius"]) for s in shift_px)
        placements.append(Placement(obj, values["azimuth"] % 360.0, values["elevation"], values["radius"],
                                    dist.lighting.names[light], (shift[0], -shift[1]), bins))
    return placements


def placement_c2w(p: Placement) -> np.ndarray:
    """Object-frame camera that sees the object at its pose, moved across the image by `shift_xy`."""
    c2w = spherical_to_c2w(p.azimuth_deg, p.elevation_deg, p.radius).double().numpy()
    move = np.eye(4)
    move[:2, 3] = [-p.shift_xy[0], -p.shift_xy[1]]  # moving the camera left moves the object right
    return c2w @ move


def composite_by_depth(rgba: np.ndarray, depth: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Front-to-back 'over' of per-object premultiplied layers (O, H, W, 4) ordered per pixel by depth.

    Returns the linear RGB image (H, W, 3) and each object's visible alpha (O, H, W).
    """
    alpha = rgba[..., 3]  # (O, H, W)
    key = np.where(alpha > 1e-4, depth, np.inf)
    order = np.argsort(key, axis=0, kind="stable")  # (O, H, W), front first
    transmittance = np.ones(alpha.shape[1:], np.float32)
    image = np.zeros(background.shape, np.float32)
    visible = np.zeros_like(alpha)
    for rank in range(alpha.shape[0]):
        idx = order[rank]
        a = np.take_along_axis(alpha, idx[None], 0)[0]
        rgb = np.take_along_axis(rgba[..., :3], idx[None, ..., None], 0)[0]
        image += transmittance[..., None] * rgb
        np.put_along_axis(visible, idx[None], (transmittance * a)[None], 0)
        transmittance = transmittance * (1.0 - a)
    return image + transmittance[..., None] * background, visible


def make_scene_set(cfg: SceneSetConfig, out: str | Path, overwrite: bool = False, device: str = "cpu") -> Path:
    """Render `cfg.images` labelled images with COCO annotations into `out` (images/ + annotations.json)."""
    cfg.validate()
    width, height = cfg.frame
    intrinsics = Intrinsics.from_fov(width, height, cfg.fov_deg)
    background = background_source(cfg.backgrounds)
    lighting = sorted({n for o in cfg.objects for n in cfg.distribution(o).lighting.names})
    assets = {o: load_asset(o) for o in cfg.objects}
    renderers = {o: GroundTruthRenderer(a, intrinsics, spp=cfg.spp, lighting=lighting, device=device) for o, a in assets.items()}
    coco = CocoBuilder([assets[o].name for o in cfg.objects])
    with staged_output_dir(out, overwrite) as stage, progress() as bar:
        (stage / "images").mkdir()
        task = bar.add_task(f"render {cfg.name}", total=cfg.images)
        for i in range(cfg.images):
            placements = draw_placements(cfg, i)
            layers = [renderers[p.object].render(placement_c2w(p), p.lighting, derive_seed(cfg.seed, cfg.name, i, k))
                      for k, p in enumerate(placements)]
            bg_rng = np.random.default_rng(derive_seed(cfg.seed, cfg.name, "background", i))
            image, visible = composite_by_depth(np.stack([l[0] for l in layers]), np.stack([l[1] for l in layers]),
                                                background(bg_rng, height, width))
            if cfg.camera is None:
                file_name = f"images/{cfg.name}_{i:05d}.png"
                atomic_save_png(stage / file_name, to_uint8(linear_to_srgb(image)))
            else:
                file_name = f"images/{cfg.name}_{i:05d}{cfg.camera.suffix}"
                camera_rng = np.random.default_rng(derive_seed(cfg.seed, cfg.name, "camera", i))
                atomic_write_bytes(stage / file_name, cfg.camera.encode(cfg.camera.apply(image, camera_rng)))
            image_id = coco.add_image(file_name, width, height, render=[to_plain(p) for p in placements])
            for p, alpha in zip(placements, visible):
                mask = mask_from_alpha(alpha, cfg.box_threshold, cfg.min_box_pixels)
                box = box_from_mask(mask)
                if box is not None and mask.sum() >= cfg.min_box_pixels:
                    coco.add_annotation(image_id, assets[p.object].name, box, mask, render=to_plain(p))
            bar.advance(task)
        coco.save(stage / "annotations.json", name=cfg.name, config=cfg.record())
    return Path(out)
