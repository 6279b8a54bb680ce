"""Backgrounds for labelled images: seeded procedural clutter, crops of the user's own photos, or crops of the
sample photos that matplotlib ships (photographic backgrounds with nothing to download).

All backgrounds are linear RGB float32 (H, W, 3) in [0, 1]; the same seed gives the same image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuralsim.color import srgb_to_linear
from neuralsim.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PHOTOS = "photos"
"""The `backgrounds` setting that selects `PhotoBackgrounds` (a folder of that name needs a longer path, e.g.
an absolute one)."""
SAMPLE_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
"""matplotlib's sample images used by `PhotoBackgrounds`: a portrait photo and a product shot on white."""


def procedural_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth two-colour gradient with soft blobs, a few rectangles and sensor noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / max(height - 1, 1), xx / max(width - 1, 1)
    c0, c1 = rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    img = (1 - t)[..., None] * c0 + t[..., None] * c1
    for _ in range(rng.integers(2, 6)):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.35)
        w = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        img = img * (1 - 0.7 * w) + 0.7 * w * rng.uniform(0.05, 0.95, 3)
    for _ in range(rng.integers(1, 4)):
        x0, y0 = rng.uniform(0, 0.9, 2)
        x1, y1 = x0 + rng.uniform(0.05, 0.4), y0 + rng.uniform(0.05, 0.4)
        box = (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)
        img[box] = 0.5 * img[box] + 0.5 * rng.uniform(0.05, 0.95, 3)
    img = img + rng.normal(0, 0.02, img.shape)
    return srgb_to_linear(np.clip(img, 0.0, 1.0))


class FolderBackgrounds:
    """Random crops of the user's photos in a folder, resized to the image size."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"Background folder {self.folder} does not exist.")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise UserError(f"Background folder {self.folder} holds no images ({', '.join(IMAGE_SUFFIXES)}).")

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        from PIL import Image

        path = self.paths[rng.integers(len(self.paths))]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
        except OSError as e:
            raise UserError(f"Background image {path} cannot be read ({e}).") from None
        scale = rng.uniform(0.4, 1.0)
        cw, ch = max(1, int(im.width * scale)), max(1, int(im.height * scale))
        x0, y0 = rng.integers(0, im.width - cw + 1), rng.integers(0, im.height - ch + 1)
        crop = im.crop((int(x0), int(y0), int(x0) + cw, int(y0) + ch)).resize((width, height), Image.BILINEAR)
        return srgb_to_linear(np.asarray(crop, np.float32) / 255.0)


class PhotoBackgrounds:
    """Random crops of matplotlib's sample photos: a photo, a crop of the image's aspect ratio covering 35–100 % of
    the largest such crop at a random place, mirrored half of the time, resized to the image size. Transparent parts
    of a photo are white."""

    def __init__(self, names: tuple[str, ...] = SAMPLE_PHOTOS):
        from matplotlib import cbook
        from PIL import Image

        self.photos = []
        for name in names:
            try:
                path = cbook.get_sample_data(name, asfileobj=False)
                with Image.open(path) as im:
                    rgba = im.convert("RGBA")
            except (OSError, ValueError) as e:
                raise UserError(f"matplotlib's sample photo {name} cannot be read ({e}); reinstall matplotlib, or use a "
                                "folder of backgrounds.") from None
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            self.photos.append(Image.alpha_composite(white, rgba).convert("RGB"))

    def __call__(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        from PIL import Image

        photo = self.photos[rng.integers(len(self.photos))]
        aspect = width / height
        full_w, full_h = (photo.width, photo.width / aspect) if photo.width / photo.height <= aspect else \
            (photo.height * aspect, photo.height)
        scale = rng.uniform(0.35, 1.0)
        cw, ch = max(1, min(photo.width, round(full_w * scale))), max(1, min(photo.height, round(full_h * scale)))
        x0, y0 = int(rng.integers(0, photo.width - cw + 1)), int(rng.integers(0, photo.height - ch + 1))
        crop = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((width, height), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return srgb_to_linear(np.asarray(crop, np.float32) / 255.0)


def background_source(folder: str | Path | None):
    """The procedural generator (None), matplotlib's sample photos ("photos"), or a folder of photos."""
    if folder is None:
        return procedural_background
    if isinstance(folder, str) and folder == PHOTOS:
        return PhotoBackgrounds()
    return FolderBackgrounds(folder)
