"""The interface every ψ-gradient method implements: one outer step's detector training and hypergradient
h ≈ dL_val/dψ, from `StepInputs` to a typed `StepOutcome`; and the second-order part nso, autosim and influence share."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from neuralsim.bilevel.data import Render, RenderVJP, TrainingSet, draw_training_set
from neuralsim.bilevel.inverse_hvp import InverseHVPConfig, InverseHVPResult, inverse_hvp
from neuralsim.bilevel.task import SecondOrderTask
from neuralsim.clock import PhaseClock
from neuralsim.errors import UserError
from neuralsim.sampling.psi import Psi


@dataclass
class SecondOrderConfig:
    """How v = (H + λI)⁻¹∇θL_val is computed for the implicit estimators (nso, autosim, influence)."""

    theta: str | None = None
    """θ of the hypergradient: 'heads', 'heads+fpn', 'all' or a regex on parameter names; None: the parameters the
    inner training trains (`train.trainable`)."""
    hvp_images: int = 48
    """Training images in the Hessian's subsample."""
    replay_batch: int = 16
    """Images replayed together in pass 2 (nso, and influence's lighting part): e_j of a batch costs one double
    backward through the detector; the render VJP stays per image and patch-wise, so the renderer's memory does not
    grow with it."""
    inverse_hvp: InverseHVPConfig = field(default_factory=InverseHVPConfig)

    def __post_init__(self):
        if self.hvp_images < 1 or self.replay_batch < 1:
            raise UserError(f"hypergradient.hvp_images and replay_batch must be at least 1, got {self.hvp_images} "
                            f"and {self.replay_batch}.")


@dataclass
class StepInputs:
    """What a method may use at outer step t. `train` trains a detector in place on a rendered set (the shots, if
    any, joined to it); `task` builds the second-order task of a trained detector on a set; `val_loss` scores one."""

    psi: Psi
    counts: dict[str, int]
    """Training images per object."""
    render: Render
    render_vjp: RenderVJP
    model: Any
    """The detector as the previous step left it."""
    train: Callable[[Any, TrainingSet], None]
    task: Callable[[Any, TrainingSet], SecondOrderTask]
    val_loss: Callable[[Any], float]
    shots: int
    """Labelled target images S joined to every training set: L_train averages over N + S images."""
    second_order: SecondOrderConfig
    generator: torch.Generator
    clock: PhaseClock
    state: dict[str, Any]
    """The method's own state carried from step to step (checkpointed with the run)."""


@dataclass
class StepOutcome:
    """One outer step of a method: the detector trained on data drawn from ψ_t, and h (None: ψ stays)."""

    model: Any
    grads: dict[str, Tensor] | None
    train: TrainingSet | None = None
    """The set the detector trained on (for the report's samples)."""
    inverse: InverseHVPResult | None = None
    rewards: list[float] | None = None
    detector_trainings: int = 1
    training_renders: int = 0
    state: dict[str, Any] = field(default_factory=dict)


def zero_missing(psi: Psi, grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """A gradient for every trainable ψ leaf: the estimate's, or zeros where it has none."""
    return {n: grads[n] if n in grads else torch.zeros_like(t) for n, t in psi.trainable().items()}


def grads_of(objective: Tensor | None, leaves: dict[str, Tensor]) -> dict[str, Tensor]:
    """∂objective/∂leaf for each leaf, zeros where the objective does not depend on it."""
    if objective is None or not objective.requires_grad:
        return {n: torch.zeros_like(t) for n, t in leaves.items()}
    grads = torch.autograd.grad(objective, list(leaves.values()), allow_unused=True)
    return {n: torch.zeros_like(t) if g is None else g for (n, t), g in zip(leaves.items(), grads)}


def add_grads(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    return {n: a.get(n, 0) + b[n] for n in b} | {n: a[n] for n in a if n not in b}


def solve_v(task: SecondOrderTask, config: InverseHVPConfig, clock: PhaseClock) -> InverseHVPResult:
    """v = (H + λI)⁻¹∇θL_val: the validation gradient, then the inverse Hessian-vector product."""
    with clock("val_grad"):
        g = task.val_grad()
    with clock("inverse_hvp"):
        return inverse_hvp(task.hvp, g, config)


@dataclass
class Implicit(ABC):
    """The implicit-gradient methods' outer step: draw D_train(ψ_t) (relaxed under `draw_tau`), train on it, solve
    v, then `estimate` h. L_train averages over the N renders and S shots, and only the renders depend on ψ, so h
    is scaled by N/(N + S)."""

    @property
    def draw_tau(self) -> float | None:
        """τ for pass 1: relaxed draws for a pathwise estimator, exact discrete draws (None) for the others."""
        return None

    @abstractmethod
    def estimate(self, psi: Psi, train: TrainingSet, task: SecondOrderTask, v: Tensor, *, render: Render,
                 render_vjp: RenderVJP, generator: torch.Generator, clock: PhaseClock,
                 replay_batch: int) -> dict[str, Tensor]:
        """h per trainable ψ leaf from v (leaves it does not cover may be left out)."""

    def step(self, inputs: StepInputs) -> StepOutcome:
        clock = inputs.clock
        with clock("render"):  # pass 1
            train = draw_training_set(inputs.psi, inputs.counts, inputs.render, inputs.generator, self.draw_tau)
        with clock("train"):
            inputs.train(inputs.model, train)
        task = inputs.task(inputs.model, train)
        inverse = solve_v(task, inputs.second_order.inverse_hvp, clock)
        grads = self.estimate(inputs.psi, train, task, inverse.v, render=inputs.render, render_vjp=inputs.render_vjp,
                              generator=inputs.generator, clock=clock, replay_batch=inputs.second_order.replay_batch)
        share = len(train) / (len(train) + inputs.shots)
        grads = {n: share * g for n, g in zero_missing(inputs.psi, grads).items()}
        return StepOutcome(inputs.model, grads, train, inverse, training_renders=len(train))
