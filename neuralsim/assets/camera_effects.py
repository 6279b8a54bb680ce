"""What a real camera does to a frame that a clean render lacks: optical blur, sensor noise and JPEG compression.

The effects act on the final composited image in the order a camera applies them: blur and noise on the linear RGB
image the sensor sees, then the sRGB curve and 8-bit quantisation, then (optionally) JPEG. Every random draw comes
from the generator passed in, so the same seed gives the same bytes. Boxes are not touched: they come from the
objects' alpha, not from the pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from neuralsim.color import linear_to_srgb, to_uint8
from neuralsim.errors import UserError


@dataclass
class CameraEffects:
    """Blur, sensor noise and compression applied to each image after compositing; zero / None turns one off."""

    noise_std: float = 0.0
    """Sensor noise in linear RGB (0–1): Gaussian read noise of this standard deviation, plus photon-like noise of
    standard deviation `noise_std · sqrt(signal)` (so the total variance is noise_std² · (1 + signal)). 0.01 is a
    visibly grainy phone photo in its shadows."""
    blur_sigma_px: float = 0.0
    """Standard deviation in pixels of a Gaussian blur of each channel (defocus, lens softness)."""
    jpeg_quality: int | None = None
    """None writes lossless PNG; else JPEG at this quality (1–95), and the image files end in .jpg."""

    def validate(self) -> None:
        if not (np.isfinite(self.noise_std) and self.noise_std >= 0):
            raise UserError(f"The camera's noise_std must be a number ≥ 0, got {self.noise_std}.")
        if not (np.isfinite(self.blur_sigma_px) and self.blur_sigma_px >= 0):
            raise UserError(f"The camera's blur_sigma_px must be a number ≥ 0, got {self.blur_sigma_px}.")
        if self.jpeg_quality is not None and (isinstance(self.jpeg_quality, bool) or not isinstance(self.jpeg_quality, int)
                                              or not 1 <= self.jpeg_quality <= 95):
            raise UserError(f"The camera's jpeg_quality must be a whole number from 1 to 95 (or none for PNG), "
                            f"got {self.jpeg_quality!r}.")

    @property
    def suffix(self) -> str:
        """The image files' suffix: .jpg with JPEG, else .png."""
        return ".png" if self.jpeg_quality is None else ".jpg"

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Linear RGB (H, W, 3) → the camera's sRGB uint8 image (H, W, 3): blur, then noise, then the sRGB curve."""
        out = np.asarray(image, np.float32)
        if self.blur_sigma_px > 0:
            from scipy.ndimage import gaussian_filter

            out = np.stack([gaussian_filter(out[..., c], self.blur_sigma_px, mode="nearest")
                            for c in range(out.shape[-1])], axis=-1)
        if self.noise_std > 0:
            read = rng.standard_normal(out.shape, dtype=np.float32)
            photon = rng.standard_normal(out.shape, dtype=np.float32)
            out = out + np.float32(self.noise_std) * (read + np.sqrt(np.clip(out, 0.0, None)) * photon)
        return to_uint8(linear_to_srgb(out))

    def encode(self, srgb: np.ndarray) -> bytes:
        """The file bytes of an sRGB uint8 image: JPEG at `jpeg_quality`, else PNG (as `atomic_save_png` writes)."""
        from PIL import Image

        buf = io.BytesIO()
        im = Image.fromarray(np.ascontiguousarray(srgb))
        if self.jpeg_quality is None:
            im.save(buf, format="PNG", optimize=False, compress_level=6)
        else:
            im.save(buf, format="JPEG", quality=int(self.jpeg_quality), optimize=False, progressive=False)
        return buf.getvalue()
