"""What the hypergradient needs from the downstream task, as a Protocol, and a default built by autograd from
a functional loss(params, images, targets) — the mean over images of per-image losses l(x_j, θ)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

# loss(params, images (n, 3, H, W) RGB in [0, 1], targets of those n images) → mean_j l(x_j, θ); it must be a mean
# of independent per-image terms (eval-mode / frozen normalisation), so that ∂/∂x_j only sees image j.
LossFn = Callable[[dict[str, Tensor], Tensor, Any], Tensor]


class SecondOrderTask(Protocol):
    """The detector side at trained θ (m = number of parameters in θ, vectors flattened in a fixed order)."""

    box_labels: bool
    """The targets are boxes found from the render, differentiable through `mixed_with_boxes`:
    mixed_with_boxes(images, targets, v) → (e, [e_b per image (n_j, 4)]), e_b = ∂/∂b_j [∇θ l(x_j, b_j, θ) · v]."""

    def hvp(self, v: Tensor) -> Tensor:
        """H v with H = ∇²θ L_train(θ), the Hessian of the mean training loss; (m,) → (m,)."""

    def val_grad(self) -> Tensor:
        """∇θ L_val(θ), the mean validation loss, computed afresh (never added to a stale gradient); (m,)."""

    def grad_dot(self, images: Tensor, targets: Any, v: Tensor) -> Tensor:
        """∇θ l(x_j, θ) · v for each image, (n,)."""

    def mixed(self, images: Tensor, targets: Any, v: Tensor) -> Tensor:
        """e_j = ∂/∂x_j [∇θ l(x_j, θ) · v], (n, 3, H, W) — a vector per image, never an m×d matrix."""


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(v: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    out, start = [], 0
    for t in like:
        out.append(v[start:start + t.numel()].view_as(t))
        start += t.numel()
    return out


class AutogradTask:
    """`SecondOrderTask` from a functional loss by double backprop, in batches of `batch_size` images."""

    box_labels = False

    def __init__(self, loss: LossFn, params: dict[str, Tensor], train: tuple[Tensor, Any], val: tuple[Tensor, Any],
                 batch_size: int = 16):
        self.loss, self.batch_size = loss, batch_size
        self.names = list(params)
        self.theta = [params[n].detach().requires_grad_(True) for n in self.names]
        self.train, self.val = train, val

    def _loss(self, images: Tensor, targets: Any) -> Tensor:
        return self.loss(dict(zip(self.names, self.theta)), images, targets)

    def _batches(self, images: Tensor, targets: Any):
        for start in range(0, len(images), self.batch_size):
            yield images[start:start + self.batch_size], targets[start:start + self.batch_size]

    def hvp(self, v: Tensor) -> Tensor:
        images, targets = self.train
        total = torch.zeros_like(v)
        for x, t in self._batches(images, targets):
            grads = torch.autograd.grad(self._loss(x, t), self.theta, create_graph=True)
            hv = torch.autograd.grad(flatten(grads) @ v, self.theta)
            total += len(x) / len(images) * flatten(hv)  # mean over all training images
        return total

    def val_grad(self) -> Tensor:
        images, targets = self.val
        total = None
        for x, t in self._batches(images, targets):
            g = len(x) / len(images) * flatten(torch.autograd.grad(self._loss(x, t), self.theta))
            total = g if total is None else total + g
        return total

    def grad_dot(self, images: Tensor, targets: Any, v: Tensor) -> Tensor:
        out = torch.empty(len(images), dtype=v.dtype)
        for j in range(len(images)):
            out[j] = flatten(torch.autograd.grad(self._loss(images[j:j + 1], targets[j:j + 1]), self.theta)) @ v
        return out

    def mixed(self, images: Tensor, targets: Any, v: Tensor) -> Tensor:
        parts = []
        for x, t in self._batches(images, targets):
            x = x.detach().requires_grad_(True)
            grads = torch.autograd.grad(self._loss(x, t), self.theta, create_graph=True)
            # the batch loss is a mean: n · ∇θ loss · v = Σ_j ∇θ l(x_j) · v, whose ∂/∂x_j is e_j
            parts.append(torch.autograd.grad(len(x) * (flatten(grads) @ v), x)[0])
        return torch.cat(parts)
