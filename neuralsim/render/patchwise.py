"""Patch-wise backward (paper Tool 3): the vector-Jacobian product of a rendered image with an upstream
image gradient, computed a patch of rays at a time so that peak memory follows the patch, not the image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from neuralsim.render.camera import Placement, render_scene
from neuralsim.render.labels import composite
from neuralsim.render.volume import RenderConfig

PatchFn = Callable[..., Tensor]  # (pixel ids (P,), *inputs) → (P, C) rendered values of those pixels


def patchwise_vjp(render_patch: PatchFn, inputs: Sequence[Tensor], grad_output: Tensor, patch_rays: int) -> list[Tensor]:
    """Σ over patches of (∂ render_patch(patch) / ∂ inputs)ᵀ · grad_output[patch].

    grad_output (N, C) is the upstream gradient of every pixel (flat, row-major); each patch is rendered
    with gradients, its slice back-propagated into detached copies of `inputs`, and its graph freed.
    Contributions are summed, never averaged: the result equals the full-image vector-Jacobian product.
    """
    leaves = [x.detach().requires_grad_(True) for x in inputs]
    grads = [torch.zeros_like(x) for x in leaves]
    for start in range(0, grad_output.shape[0], patch_rays):
        ids = torch.arange(start, min(start + patch_rays, grad_output.shape[0]), device=grad_output.device)
        values = render_patch(ids, *leaves)  # (P, C)
        parts = torch.autograd.grad(values, leaves, grad_output[ids].to(values), allow_unused=True)
        for total, part in zip(grads, parts):
            if part is not None:
                total += part
    return grads


def scene_image_patch(placements: Sequence[Placement], size: int | tuple[int, int], fov_deg: float,
                      background: Tensor | None, config: RenderConfig | None) -> Callable[[Tensor, list[Tensor]], Tensor]:
    """A patch renderer of the composited image (P, 3) for `patchwise_vjp`, whose inputs are every
    tensor field of the placements (pose, shift, appearance weights), in `scene_tensors` order."""

    def render_patch(ids: Tensor, *tensors: Tensor) -> Tensor:
        patch_placements = _with_tensors(placements, list(tensors))
        out = render_scene(patch_placements, size, fov_deg, ids, config=config)
        if background is None:
            return out.rgb
        return composite(out.rgb, out.alpha, background.reshape(-1, background.shape[-1])[ids])

    return render_patch


_TENSOR_FIELDS = ("azimuth_deg", "elevation_deg", "radius", "appearance", "shift_xy")


def scene_tensors(placements: Sequence[Placement]) -> list[Tensor]:
    """The tensors of the placements that gradients can reach, in a fixed order."""
    return [getattr(p, name) for p in placements for name in _TENSOR_FIELDS if isinstance(getattr(p, name), Tensor)]


def _with_tensors(placements: Sequence[Placement], tensors: list[Tensor]) -> list[Placement]:
    queue = iter(tensors)
    return [dataclasses.replace(p, **{name: next(queue) for name in _TENSOR_FIELDS
                                      if isinstance(getattr(p, name), Tensor)}) for p in placements]


def backward_scene_patchwise(placements: Sequence[Placement], size: int | tuple[int, int], fov_deg: float,
                             grad_image: Tensor, *, background: Tensor | None = None, patch_rays: int = 1024,
                             config: RenderConfig | None = None) -> list[Tensor]:
    """Back-propagate an upstream gradient of the rendered (composited) image, patch by patch.

    grad_image (H, W, 3) is dL/d(image) for RGB in [0, 1]; background (H, W, 3) straight RGB, or None for
    the premultiplied render over black. Returns the gradients of `scene_tensors(placements)` and, for
    those that require grad, back-propagates them once further (e.g. into ψ) with `torch.autograd.backward`.
    """
    tensors = scene_tensors(placements)
    render_patch = scene_image_patch(placements, size, fov_deg, background, config)
    grads = patchwise_vjp(render_patch, tensors, grad_image.reshape(-1, 3), patch_rays)
    pairs = [(x, g) for x, g in zip(tensors, grads) if x.requires_grad]
    if pairs:
        torch.autograd.backward([x for x, _ in pairs], [g for _, g in pairs])
    return grads
