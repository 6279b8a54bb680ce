"""Neural-Sim's pathwise estimator (`nso`): h = −(1/N) Σ_j e_j · ∂x_j/∂ψ, e_j = ∂/∂x_j[∇θ l(x_j, θ)·v], through
relaxed (Gumbel-softmax, Tool 1) draws and the renderer's vector-Jacobian product (Tool 2 pass 2, Tool 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from neuralsim.bilevel.data import RenderVJP, TrainingSet
from neuralsim.bilevel.estimators.base import Implicit, add_grads, grads_of
from neuralsim.bilevel.task import SecondOrderTask
from neuralsim.clock import PhaseClock
from neuralsim.errors import UserError
from neuralsim.sampling.bins import FACTORS
from neuralsim.sampling.psi import Psi


@dataclass
class NSOConfig(Implicit):
    """Neural-Sim (NSO): the pathwise gradient through relaxed draws and the renderer."""

    method: Literal["nso"] = "nso"
    tau: float = 0.1
    """Temperature of the relaxed draws (Tool 1)."""
    pathwise_labels: bool = True
    """Move each image's boxes with the render (needs a smooth box loss: under L1, ∇θ of the loss holds only the
    signs of the box residuals)."""

    optimises_psi = True

    def __post_init__(self):
        if not self.tau > 0:
            raise UserError(f"nso needs tau > 0, got {self.tau}.")

    @property
    def draw_tau(self) -> float | None:
        return self.tau

    def estimate(self, psi, train, task, v, *, render, render_vjp, generator, clock, replay_batch):
        return pathwise(psi, train, task, v, render_vjp, replay_batch, labels=self.pathwise_labels, clock=clock)


def pathwise(psi: Psi, train: TrainingSet, task: SecondOrderTask, v: Tensor, render_vjp: RenderVJP,
             replay_batch: int = 1, factors: tuple[str, ...] = (*FACTORS, "lighting"),
             labels: bool = True, clock: PhaseClock | None = None) -> dict[str, Tensor]:
    """h per trainable leaf among `factors`: each sample replayed from its noise (differentiable in ψ), e_j pulled
    back through the renderer, then through the sampler and softmax by autograd.

    With `labels` and a task whose targets are boxes (`task.box_labels`), each image's boxes move with the render:
    e_b = ∂/∂b_j[∇θ l·v] is pulled back through the boxes' sub-pixel edges too. Without it a zoom or a turn of the
    object would be scored against the box it had before it moved."""
    clock = clock or PhaseClock()
    with_boxes = labels and task.box_labels
    grads: dict[str, Tensor] = {}
    for draws in train.draws:
        leaves = {f"{draws.obj}/{f}": t for f, t in psi.objects[draws.obj].parameters().items()
                  if t.requires_grad and f in factors}
        if not leaves:
            continue
        n_o = draws.rows.stop - draws.rows.start
        for i in range(0, n_o, replay_batch):
            rows = slice(draws.rows.start + i, min(draws.rows.start + i + replay_batch, draws.rows.stop))
            params = train.replay(psi, draws, slice(i, i + replay_batch))  # differentiable in ψ
            with clock("mixed"):  # e_j (b, 3, H, W) and, with the labels, e_b and the boxes b they move
                if with_boxes:
                    e, e_boxes = task.mixed_with_boxes(train.images[rows], train.targets[rows], v)
                    cotangents = (e, e_boxes, train.targets[rows])
                else:
                    cotangents = (task.mixed(train.images[rows], train.targets[rows], v),)
            with clock("render_vjp"):
                upstream = render_vjp(draws.obj, params.detach(), *cotangents)  # ∂(⟨x, e⟩ [+ ⟨b, e_b⟩])/∂params
            clock.count("replay_renders", len(params))  # rendered again, with gradients (pass 2)
            surrogate = sum((p * u).sum() for p, u in zip(params.tensors(), upstream.tensors()) if p.requires_grad)
            objective = -surrogate / len(train) if torch.is_tensor(surrogate) else None
            grads = add_grads(grads, grads_of(objective, leaves))
    return grads
