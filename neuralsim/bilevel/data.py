"""Pass 1 of Tool 2: draw render parameters from ψ (relaxed or discrete), render without gradients and keep
the noise; the renderer is a callable, and its vector-Jacobian product a replaceable hook (Tool 3 plugs in)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from neuralsim.sampling.psi import ObjectNoise, Psi, RenderParams

# render(object, params of n images) → (images (n, 3, H, W) float RGB in [0, 1], targets of those n images)
Render = Callable[[str, RenderParams], tuple[Tensor, Any]]
# render_vjp(object, params of n images, upstream (n, 3, H, W)[, box_upstream, targets]) → ∂⟨images(params), upstream⟩/∂params
# per continuous parameter (the patch-wise backward of Tool 3 has this signature; `full_image_vjp` is the default).
# A renderer whose labels are boxes from its alpha may also take box_upstream, per image the cotangent (n_j, 4) of
# its target boxes, and add ∂⟨boxes(params), box_upstream⟩/∂params (see `FieldSource.vjp`); `targets`, the targets
# of pass 1, lets it skip finding the boxes again.
RenderVJP = Callable[..., RenderParams]


def full_image_vjp(render: Render) -> RenderVJP:
    """The plain VJP: render the whole images with gradients and backpropagate `upstream` once, and with
    `box_upstream` the boxes' cotangents too: ∂(Σ_j ⟨image_j, upstream_j⟩ + ⟨boxes_j, box_upstream_j⟩)/∂params.
    The boxes are the targets' "boxes", which must then be differentiable where they move (`FieldSource`'s are)."""

    def vjp(obj: str, params: RenderParams, upstream: Tensor, box_upstream: list[Tensor] | None = None,
            targets: Any = None) -> RenderParams:
        leaves = [t.detach().requires_grad_(True) for t in params.tensors()]
        images, targets = render(obj, params.with_tensors(leaves))
        outputs, cotangents = [images], [upstream]
        if box_upstream is not None:
            if not all(isinstance(t, dict) and "boxes" in t for t in targets):
                raise ValueError("the labels of this `Render` are not boxes; pass a `RenderVJP` that takes box "
                                 "cotangents (such as `FieldSource.vjp`) or set pathwise_labels=False")
            moving = [(t["boxes"], g) for t, g in zip(targets, box_upstream) if t["boxes"].requires_grad]
            outputs += [b for b, _ in moving]
            cotangents += [g.to(b) for b, g in moving]
        grads = torch.autograd.grad(outputs, leaves, cotangents, allow_unused=True)
        return params.with_tensors(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads))

    return vjp


@dataclass(frozen=True)
class ObjectDraws:
    """n_o draws of one object: their noise, their (detached) render parameters, their rows in the set."""

    obj: str
    noise: ObjectNoise
    params: RenderParams
    rows: slice


@dataclass(frozen=True)
class TrainingSet:
    """D_train(ψ) from pass 1: images rendered without gradients, and what is needed to replay each one."""

    draws: list[ObjectDraws]
    images: Tensor  # (N, 3, H, W)
    targets: Any  # N targets (a list, or a tensor with N rows)
    tau: float | None  # Tool 1 temperature of relaxed draws; None for discrete draws

    def __len__(self) -> int:
        return len(self.images)

    def replay(self, psi: Psi, draws: ObjectDraws, index: slice) -> RenderParams:
        """The render parameters of draws[index] again from their noise, now differentiable in ψ."""
        noise = draws.noise.select(index)
        obj = psi.objects[draws.obj]
        return obj.discrete(noise) if self.tau is None else obj.relaxed(noise, self.tau)


def concat_targets(parts: list[Any]) -> Any:
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)
    return [t for part in parts for t in part]


@torch.no_grad()
def draw_training_set(psi: Psi, counts: dict[str, int], render: Render, generator: torch.Generator,
                      tau: float | None, batch: int = 16) -> TrainingSet:
    """Draw counts[o] images of each object o from ψ (relaxed with temperature τ, or discrete when τ is None)
    and render them in batches, without gradients."""
    draws, images, targets, start = [], [], [], 0
    for obj, n in counts.items():
        noise = psi.objects[obj].draw_noise(n, generator)
        params = (psi.objects[obj].discrete(noise) if tau is None else psi.objects[obj].relaxed(noise, tau)).detach()
        for i in range(0, n, batch):
            x, t = render(obj, params.select(slice(i, i + batch)))
            images.append(x)
            targets.append(t)
        draws.append(ObjectDraws(obj, noise, params, slice(start, start + n)))
        start += n
    return TrainingSet(draws, torch.cat(images), concat_targets(targets), tau)
