"""Labelled images from renders: compositing the premultiplied render over a background (differentiable),
and per-object masks and xyxy pixel boxes from per-object alpha (tiny floaters ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor

from neuralsim.data.boxes import box_from_mask, mask_from_alpha


def composite(rgb_premultiplied: Tensor, alpha: Tensor, background: Tensor) -> Tensor:
    """Over-operator: rgb + (1 − alpha)·background.

    rgb_premultiplied (…, 3) is the render (colour already weighted by opacity), alpha (…,) its opacity,
    background (…, 3) straight, opaque RGB in [0, 1]. Differentiable in all three.
    """
    return rgb_premultiplied + (1.0 - alpha)[..., None] * background


@dataclass
class ObjectLabel:
    mask: np.ndarray  # (H, W) bool visible pixels of the object
    box_xyxy: np.ndarray | None  # (4,) absolute pixels (x2, y2 exclusive); None when the object is not visible


def labels_from_alpha(object_alpha: Tensor, threshold: float = 0.5, min_pixels: int = 4) -> list[ObjectLabel]:
    """One label per object from per-object alpha (O, H, W): mask above `threshold`, specks under
    `min_pixels` dropped, and the tight box around what is left."""
    labels = []
    for alpha in object_alpha.detach().cpu().numpy():
        mask = mask_from_alpha(alpha, threshold, min_pixels)
        labels.append(ObjectLabel(mask, box_from_mask(mask)))
    return labels
