"""Second-order access to the detection loss for the hypergradient (DESIGN.md §5): the loss as a pure
function of (θ, images), Hessian-vector products, the mixed term ∂/∂x[∇θ l·v], per-image ∇θ l·v, ∇θ L_val.

Conventions: θ is a dict name → tensor (a subset of the detector's parameters, `select_params`); every
function here takes images as float RGB [0, 1] NCHW and targets as in `Detector.forward`; losses are
*summed* over the images of a batch, l(x_j, θ) being torchvision's focal + box loss of image j, so each
result is independent of how images are batched (the norm layers never couple images). Nothing touches
the `.grad` fields of the model.
"""

from __future__ import annotations

import re
import warnings

import torch
from torch import Tensor
from torch.func import functional_call

from neuralsim.errors import UserError
from neuralsim.tasks.data import DetectionData, iterate_batches, to_device
from neuralsim.tasks.detector import Detector, Targets

Params = dict[str, Tensor]

# torch.func.jvp goes through a torch-internal `torch.jit.script` that warns on every call; the warning is torch's.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)

PARAM_GROUPS = {
    "heads": r"^head\.",
    "heads+fpn": r"^(head|backbone\.fpn)\.",
    "all": r"",
}
"""Named subsets of θ; any other string is used as a regular expression on parameter names (re.search)."""


def select_params(model: Detector, pattern: str = "heads") -> Params:
    """θ: the trainable parameters whose names match `pattern` (a `PARAM_GROUPS` key or a regex), as
    leaves that share storage with the model (training the model moves them) and require grad."""
    try:
        regex = re.compile(PARAM_GROUPS.get(pattern, pattern))
    except re.error as e:
        raise UserError(f"Parameter pattern {pattern!r} is not a valid regular expression ({e}).") from None
    params = {n: p.detach().requires_grad_(True) for n, p in model.named_parameters()
              if p.requires_grad and regex.search(n)}
    if not params:
        raise UserError(f"No trainable detector parameter matches {pattern!r} (groups: {', '.join(PARAM_GROUPS)}).")
    return params


def per_image_loss(model: Detector, params: Params, images: Tensor, targets: Targets) -> Tensor:
    """(N,) l(x_j, θ): the model's loss on each image with θ taken from `params`, other weights from `model`."""
    out = functional_call(model, params, (images, targets), {"detect": False}, strict=False)
    return out.loss_per_image()


def detection_loss(model: Detector, params: Params, images: Tensor, targets: Targets) -> Tensor:
    """Σ_j l(x_j, θ), a scalar differentiable twice in `params` and `images`."""
    return per_image_loss(model, params, images, targets).sum()


def dot(a: Params, b: Params) -> Tensor:
    """Σ_k <a_k, b_k> over the tensors of two parameter dicts with the same keys."""
    return sum((a[k] * b[k]).sum() for k in a)  # type: ignore[return-value]


def loss_grad(model: Detector, params: Params, images: Tensor, targets: Targets) -> Params:
    """∇θ Σ_j l(x_j, θ)."""
    loss = detection_loss(model, params, images, targets)
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def hvp(model: Detector, params: Params, images: Tensor, targets: Targets, v: Params) -> Params:
    """H v with H = ∇²θ Σ_j l(x_j, θ) on this batch (double backprop). Average over batches for L_train."""
    theta = list(params.values())
    grads = torch.autograd.grad(detection_loss(model, params, images, targets), theta, create_graph=True)
    hv = torch.autograd.grad(dot(dict(zip(params, grads)), v), theta, allow_unused=True)
    return {k: torch.zeros_like(p) if h is None else h for (k, p), h in zip(params.items(), hv)}


def mixed_term(model: Detector, params: Params, images: Tensor, targets: Targets, v: Params) -> Tensor:
    """(N, 3, H, W) e_j = ∂/∂x_j [∇θ l(x_j, θ) · v] for each image of the batch (an image-sized vector each)."""
    x = images.detach().requires_grad_(True)
    theta = list(params.values())
    grads = torch.autograd.grad(detection_loss(model, params, x, targets), theta, create_graph=True)
    (e,) = torch.autograd.grad(dot(dict(zip(params, grads)), v), x)
    return e


def mixed_term_with_boxes(model: Detector, params: Params, images: Tensor, targets: Targets,
                          v: Params) -> tuple[Tensor, list[Tensor]]:
    """`mixed_term` and, per image, ∂/∂b_j [∇θ l(x_j, b_j, θ) · v] for its target boxes b_j (n_j, 4).

    The boxes enter the loss through the box-regression targets; the anchor matching is piecewise constant
    in them and contributes nothing."""
    x = images.detach().requires_grad_(True)
    boxes = [t["boxes"].detach().to(x.dtype).requires_grad_(True) for t in targets]
    moved = [t | {"boxes": b} for t, b in zip(targets, boxes)]
    theta = list(params.values())
    grads = torch.autograd.grad(detection_loss(model, params, x, moved), theta, create_graph=True)
    e, *e_boxes = torch.autograd.grad(dot(dict(zip(params, grads)), v), [x, *boxes], allow_unused=True)
    return e, [torch.zeros_like(b) if g is None else g for b, g in zip(boxes, e_boxes)]


def per_image_grad_dot(model: Detector, params: Params, images: Tensor, targets: Targets, v: Params) -> Tensor:
    """(N,) ∇θ l(x_j, θ) · v for each image: one forward-mode pass (the directional derivative along v)."""
    def losses(p: Params) -> Tensor:
        return per_image_loss(model, p, images.detach(), targets)

    primals = {k: p.detach() for k, p in params.items()}
    anchors = list(model.anchor_generator.cell_anchors)
    try:
        _, directional = torch.func.jvp(losses, (primals,), ({k: v[k].detach() for k in params},))
    finally:
        # the anchor generator re-stores its cell anchors on every forward; under jvp they come back as wrappers of
        # the transform, which outlive it and make the model impossible to deep-copy
        model.anchor_generator.cell_anchors = anchors
    return directional


def validation_gradient(model: Detector, params: Params, data: DetectionData, *, batch_size: int = 8) -> Params:
    """∇θ L_val = ∇θ (1/N) Σ_j l(x_j, θ) over the whole set, in eval mode, from zero (no `.grad` involved)."""
    theta = next(iter(params.values()))
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    was_training = model.training
    model.eval()
    try:
        for images, targets in iterate_batches(data, batch_size):
            images, targets = to_device(images, targets, theta.device, theta.dtype)
            for k, g in loss_grad(model, params, images, targets).items():
                total[k] += g
    finally:
        model.train(was_training)
    return {k: g / len(data) for k, g in total.items()}
