"""Labelled images from renders: compositing the premultiplied render over a background (differentiable),
per-object masks and xyxy pixel boxes from per-object alpha (tiny floaters ignored), and the derivative of a
box's edges with respect to the render (`subpixel_box`), so that labels move with the camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
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


def subpixel_box(alpha: Tensor, box_xyxy: Tensor, threshold: float = 0.5, min_slope: float = 0.05) -> Tensor:
    """The box `box_xyxy` (4,) of `labels_from_alpha`, with the derivative of its edges' sub-pixel positions.

    The value is the hard box, unchanged; the derivative is that of `edge_shift`, so a render that grows the
    object moves its box outwards."""
    shift = edge_shift(alpha, box_xyxy, threshold, min_slope)
    return box_xyxy.to(alpha) + (shift - shift.detach())


def edge_shift(alpha: Tensor, box_xyxy: Tensor, threshold: float = 0.5, min_slope: float = 0.05) -> Tensor:
    """(4,) where each edge of the hard box `box_xyxy` would sit at sub-pixel precision, minus a constant.

    An edge is where the object's alpha profile (the maximum of `alpha` (H, W) across the box, along the rows
    or the columns) crosses `threshold`, linearly interpolated between the centres of the pixels on either
    side of the hard edge. An edge on the image border, or one whose outer neighbour is itself above the
    threshold (a removed speck), does not move. The slope is clamped at `min_slope`, so that a flat profile
    does not blow the derivative up.
    """
    x1, y1, x2, y2 = (int(v) for v in box_xyxy.round())
    cols = alpha[y1:y2].amax(dim=0)  # (W,) profile along x, over the box's rows
    rows = alpha[:, x1:x2].amax(dim=1)  # (H,) profile along y, over the box's columns

    def crossing(profile: Tensor, inside: int, outside: int) -> Tensor:
        """d: the crossing's distance in pixels from the centre of `outside` towards `inside`; 0 where fixed."""
        if not 0 <= outside < len(profile) or float(profile[outside].detach()) >= threshold:
            return profile.new_zeros(())
        a_in, a_out = profile[inside], profile[outside]
        return (threshold - a_out) / (a_in - a_out).clamp(min=min_slope)

    # A near edge (x1, y1) sits at a constant + d, a far edge (x2, y2) at a constant − d.
    d = torch.stack([crossing(cols, x1, x1 - 1), crossing(rows, y1, y1 - 1),
                     crossing(cols, x2 - 1, x2), crossing(rows, y2 - 1, y2)])
    return d * alpha.new_tensor([1.0, 1.0, -1.0, -1.0])


def edge_pixels(box_xyxy: Tensor, height: int, width: int) -> Tensor:
    """Flat row-major indices of the pixels `edge_shift` reads for this box: the columns on either side of the
    left and right edges across the box's rows, and the rows on either side of the top and bottom edges across
    its columns. Rendering alpha at these rays alone gives `edge_shift` the same values as a whole image."""
    x1, y1, x2, y2 = (int(v) for v in box_xyxy.round())
    cols = torch.tensor([c for c in (x1 - 1, x1, x2 - 1, x2) if 0 <= c < width], dtype=torch.long)
    rows = torch.tensor([r for r in (y1 - 1, y1, y2 - 1, y2) if 0 <= r < height], dtype=torch.long)
    down = torch.arange(y1, y2)[:, None] * width + cols[None, :]  # (box rows, edge columns)
    across = rows[:, None] * width + torch.arange(x1, x2)[None, :]  # (edge rows, box columns)
    return torch.unique(torch.cat([down.reshape(-1), across.reshape(-1)]))
