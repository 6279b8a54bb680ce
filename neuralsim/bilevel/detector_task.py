"""RetinaNet as the `SecondOrderTask` of the hypergradient: flat θ vectors over a named parameter subset,
HVPs on a subsample of the training set, ∇θL_val over the validation set, per-image terms by batches."""

from __future__ import annotations

import torch
from torch import Tensor

from neuralsim.bilevel.task import flatten, unflatten
from neuralsim.tasks.data import DetectionData
from neuralsim.tasks.detector import Detector, Targets
from neuralsim.tasks.second_order import (
    hvp,
    mixed_term,
    mixed_term_with_boxes,
    per_image_grad_dot,
    select_params,
    validation_gradient,
)


class DetectorTask:
    """θ = the detector's parameters matching `pattern`; L_train's Hessian from `hvp_images`/`hvp_targets`."""

    box_labels = True

    def __init__(self, model: Detector, pattern: str, hvp_images: Tensor, hvp_targets: Targets, val: DetectionData,
                 batch_size: int = 16):
        self.model = model.eval()
        self.params = select_params(model, pattern)
        self.like = list(self.params.values())
        self.device = self.like[0].device
        self.hvp_images, self.hvp_targets = hvp_images, hvp_targets
        self.val, self.batch_size = val, batch_size

    @property
    def size(self) -> int:
        return sum(p.numel() for p in self.like)

    def _dict(self, v: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.params, unflatten(v.to(self.device, self.like[0].dtype), self.like)))

    def _batches(self, images: Tensor, targets: Targets):
        for start in range(0, len(images), self.batch_size):
            x = images[start:start + self.batch_size].to(self.device)
            t = [{k: v.to(self.device) for k, v in d.items()} for d in targets[start:start + self.batch_size]]
            yield x, t

    def hvp(self, v: Tensor) -> Tensor:
        """H v, H the Hessian of the mean training loss over the HVP subsample."""
        vd = self._dict(v)
        total = torch.zeros_like(v)
        for x, t in self._batches(self.hvp_images, self.hvp_targets):
            total += flatten(list(hvp(self.model, self.params, x, t, vd).values())).to(v) / len(self.hvp_images)
        return total

    def val_grad(self) -> Tensor:
        return flatten(list(validation_gradient(self.model, self.params, self.val, batch_size=self.batch_size).values()))

    def grad_dot(self, images: Tensor, targets: Targets, v: Tensor) -> Tensor:
        vd = self._dict(v)
        return torch.cat([per_image_grad_dot(self.model, self.params, x, t, vd).detach().cpu()
                          for x, t in self._batches(images, targets)]).to(v.dtype)

    def mixed(self, images: Tensor, targets: Targets, v: Tensor) -> Tensor:
        vd = self._dict(v)
        return torch.cat([mixed_term(self.model, self.params, x, t, vd).detach().cpu()
                          for x, t in self._batches(images, targets)])

    def mixed_with_boxes(self, images: Tensor, targets: Targets, v: Tensor) -> tuple[Tensor, list[Tensor]]:
        """`mixed` and, per image, e_b = ∂/∂b [∇θ l(x, b, θ) · v] for its target boxes (n_j, 4)."""
        vd, images_part, boxes_part = self._dict(v), [], []
        for x, t in self._batches(images, targets):
            e, e_boxes = mixed_term_with_boxes(self.model, self.params, x, t, vd)
            images_part.append(e.detach().cpu())
            boxes_part += [b.detach().cpu() for b in e_boxes]
        return torch.cat(images_part), boxes_part
