"""Patch-wise backward (paper Tool 3): the vector-Jacobian product of a rendered scene, its composited image and
the sub-pixel boxes of its objects, computed a patch of rays at a time so that peak memory follows the patch,
not the image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from neuralsim.render.camera import Placement, _field_dtype_device, intrinsics_for, render_scene
from neuralsim.render.labels import composite, edge_pixels, subpixel_box
from neuralsim.render.volume import RenderConfig


def scene_vjp(placements: Sequence[Placement], inputs: Sequence[Tensor], size: int | tuple[int, int], fov_deg: float,
              grad_image: Tensor, *, background: Tensor | None = None, boxes: Sequence[Tensor | None] = (),
              box_grads: Sequence[Tensor | None] = (), box_threshold: float = 0.5, patch_rays: int = 1024,
              config: RenderConfig | None = None) -> list[Tensor]:
    """∂/∂inputs [⟨image, grad_image⟩ + Σ_o ⟨box_o, box_grads[o]⟩] for placements whose tensors (pose, shift,
    appearance weights) are differentiable functions of `inputs`.

    image (H, W, 3) is the render composited over `background` (H, W, 3, straight RGB), or premultiplied over
    black when it is None; grad_image (H, W, 3). box_o = `subpixel_box(alpha_o, boxes[o], box_threshold)` is
    object o's hard box boxes[o] (4,) xyxy whose edges move with its alpha_o (H, W); objects past the end of
    `boxes`, or with a None box or box gradient, add no box term. The box term becomes a cotangent of alpha,
    g_o = (∂box_o/∂alpha_o)ᵀ·box_grads[o], found from alpha rendered on the box's edge rays alone. Then
    Σ_patches (∂(image, alpha_o)[patch]/∂t)ᵀ·(grad_image, g_o)[patch] for the placements' tensors t, each patch's
    graph freed before the next, and once back through t(inputs). Summed, never averaged: this equals the VJP
    of the whole image. Returns one gradient per input (zeros where it has none).
    """
    intrinsics = intrinsics_for(size, fov_deg)
    height, width = intrinsics.height, intrinsics.width
    tensors = scene_tensors(placements)
    leaves = [t.detach().requires_grad_(True) for t in tensors]
    at_leaves = _with_tensors(placements, leaves)
    dtype, device = _field_dtype_device(placements[0].field)  # the render's
    columns, boxed = [grad_image.reshape(-1, 3).to(device, dtype)], []  # cotangents (H·W, 3 + boxes), the boxed objects
    for o, (box, box_grad) in enumerate(zip(boxes, box_grads)):
        g = None if box is None or box_grad is None else _alpha_cotangent(
            at_leaves, o, box, box_grad, size, fov_deg, box_threshold, config)
        if g is not None:
            columns.append(g.reshape(-1, 1).to(device, dtype))
            boxed.append(o)
    cotangent = torch.cat(columns, dim=1)
    grads = [torch.zeros_like(x) for x in leaves]
    for start in range(0, height * width, patch_rays):
        ids = torch.arange(start, min(start + patch_rays, height * width), device=device)
        out = render_scene(at_leaves, size, fov_deg, ids, config=config)
        image = out.rgb if background is None else composite(out.rgb, out.alpha, background.reshape(-1, 3)[ids])
        values = torch.cat([image, out.object_alpha[boxed].T], dim=1)  # (P, 3 + boxes)
        parts = torch.autograd.grad(values, leaves, cotangent[ids], allow_unused=True)
        for total, part in zip(grads, parts):
            if part is not None:
                total += part
    pairs = [(t, g) for t, g in zip(tensors, grads) if t.requires_grad]
    pulled = torch.autograd.grad([t for t, _ in pairs], inputs, [g for _, g in pairs],
                                 allow_unused=True) if pairs else [None] * len(inputs)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, pulled)]


def _alpha_cotangent(placements: Sequence[Placement], o: int, box: Tensor, box_grad: Tensor,
                     size: int | tuple[int, int], fov_deg: float, threshold: float,
                     config: RenderConfig | None) -> Tensor | None:
    """(H, W) (∂ subpixel_box(alpha_o, box)/∂alpha_o)ᵀ·box_grad (4,), with object o's alpha rendered only on the
    rays `subpixel_box` reads; None when it adds nothing (a zero box gradient, or no edge that can move)."""
    if not bool(box_grad.any()):
        return None
    intrinsics = intrinsics_for(size, fov_deg)
    box = box.reshape(4)
    ids = edge_pixels(box, intrinsics.height, intrinsics.width)
    with torch.no_grad():
        edge = render_scene(placements, size, fov_deg, ids, config=config).object_alpha[o]  # (E,)
    alpha = edge.new_zeros(intrinsics.height * intrinsics.width).index_put((ids.to(edge.device),), edge)
    alpha = alpha.reshape(intrinsics.height, intrinsics.width).requires_grad_(True)
    moved = subpixel_box(alpha, box, threshold)
    if not moved.requires_grad:
        return None
    (grad,) = torch.autograd.grad(moved, alpha, box_grad.reshape(4).to(moved))
    return grad


_TENSOR_FIELDS = ("azimuth_deg", "elevation_deg", "radius", "appearance", "shift_xy")


def scene_tensors(placements: Sequence[Placement]) -> list[Tensor]:
    """The tensors of the placements that gradients can reach, in a fixed order."""
    return [getattr(p, name) for p in placements for name in _TENSOR_FIELDS if isinstance(getattr(p, name), Tensor)]


def _with_tensors(placements: Sequence[Placement], tensors: list[Tensor]) -> list[Placement]:
    queue = iter(tensors)
    return [dataclasses.replace(p, **{name: next(queue) for name in _TENSOR_FIELDS
                                      if isinstance(getattr(p, name), Tensor)}) for p in placements]
