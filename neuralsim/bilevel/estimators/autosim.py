"""Auto-Sim's score-function estimator: h = −(1/N) Σ_j (∇θ l(x_j, θ)·v − b_j) ∇ψ log p(V_j), on exact discrete
draws, b_j a leave-one-out baseline over the same object's images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from neuralsim.bilevel.data import TrainingSet
from neuralsim.bilevel.estimators.base import Implicit, grads_of
from neuralsim.bilevel.task import SecondOrderTask
from neuralsim.clock import PhaseClock
from neuralsim.sampling.psi import Psi


@dataclass
class AutoSimConfig(Implicit):
    """Auto-Sim: the score-function (REINFORCE) gradient of the implicit objective, on discrete draws. It covers
    the bin logits only (lighting weights are mixed, not drawn)."""

    method: Literal["autosim"] = "autosim"
    baseline: Literal["leave_one_out", "none"] = "leave_one_out"
    """b_j: the mean of the other images' ∇θl·v of the same object, or none."""

    optimises_psi = True

    def estimate(self, psi, train, task, v, *, render, render_vjp, generator, clock, replay_batch):
        return score_function(psi, train, task, v, self.baseline, clock)


def score_function(psi: Psi, train: TrainingSet, task: SecondOrderTask, v: Tensor,
                   baseline: str = "leave_one_out", clock: PhaseClock | None = None) -> dict[str, Tensor]:
    """h per trainable leaf, from one set of exact discrete draws."""
    if train.tau is not None:
        raise ValueError("the score-function estimator needs a training set of discrete draws (tau=None)")
    with (clock or PhaseClock())("grad_dot"):
        g = task.grad_dot(train.images, train.targets, v).detach()  # (N,)
    surrogate = None
    for draws in train.draws:
        g_o = g[draws.rows]
        n_o = len(g_o)
        b = (g_o.sum() - g_o) / (n_o - 1) if baseline == "leave_one_out" and n_o > 1 else 0 * g_o
        term = ((g_o - b) * psi.objects[draws.obj].log_prob(draws.params.bins)).sum()
        surrogate = term if surrogate is None else surrogate + term
    return grads_of(-surrogate / len(train), psi.trainable())
