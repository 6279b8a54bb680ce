"""Boxes and masks from alpha. Internally boxes are absolute xyxy pixels; COCO files use [x, y, w, h]."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def mask_from_alpha(alpha: np.ndarray, threshold: float = 0.5, min_pixels: int = 4) -> np.ndarray:
    """Boolean mask of `alpha` (H, W) above `threshold`, with connected specks under `min_pixels` removed."""
    mask = np.asarray(alpha) > threshold
    if min_pixels > 1 and mask.any():
        labels, n = ndimage.label(mask)
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        keep = np.zeros(n + 1, bool)
        keep[1:] = sizes >= min_pixels
        mask = keep[labels]
    return mask


def box_from_mask(mask: np.ndarray) -> np.ndarray | None:
    """Tight xyxy box in pixels (x1, y1 inclusive edges; x2, y2 exclusive) or None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def xyxy_to_xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def xywh_to_xyxy(box) -> list[float]:
    x, y, w, h = (float(v) for v in box)
    return [x, y, x + w, y + h]


def draw_boxes(image: np.ndarray, boxes: np.ndarray, colour=(0, 255, 0)) -> np.ndarray:
    """A copy of `image` (H, W, 3) uint8 with one-pixel outlines of `boxes` (n, 4) xyxy pixels."""
    image = image.copy()
    h, w = image.shape[:2]
    for box in np.asarray(boxes).astype(int):
        x1, y1, x2, y2 = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
        image[y1, x1:x2 + 1] = image[y2, x1:x2 + 1] = image[y1:y2 + 1, x1] = image[y1:y2 + 1, x2] = colour
    return image
