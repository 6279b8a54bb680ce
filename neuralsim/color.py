"""sRGB ↔ linear RGB. Renderers and compositing work in linear RGB; PNG files hold sRGB."""

from __future__ import annotations

import numpy as np


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float32)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055).astype(np.float32)


def to_uint8(c: np.ndarray) -> np.ndarray:
    return np.round(np.clip(c, 0.0, 1.0) * 255.0).astype(np.uint8)
