"""Ours (`influence`): the exact per-bin influence. dL_val/dp_{o,i} = −(n_o/N)·m_i with m_i = E[∇θ l(x, θ)·v | bin i],
estimated by stratified probe renders per bin, then the softmax Jacobian; lighting weights by the pathwise gradient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from neuralsim.bilevel.data import Render, RenderVJP, TrainingSet
from neuralsim.bilevel.estimators.base import Implicit, add_grads
from neuralsim.bilevel.estimators.nso import pathwise
from neuralsim.bilevel.task import SecondOrderTask
from neuralsim.clock import PhaseClock
from neuralsim.errors import UserError
from neuralsim.sampling.bins import FACTORS
from neuralsim.sampling.psi import ObjectPsi, Psi, RenderParams

FIELD_OF = {"azimuth": "azimuth_deg", "elevation": "elevation_deg", "radius": "radius"}


@dataclass
class InfluenceConfig(Implicit):
    """The per-bin influence estimator (ours): exact in expectation for categorical factors."""

    method: Literal["influence"] = "influence"
    probes_per_bin: int = 4
    """Stratified probe renders per bin."""
    paired_probes: bool = False
    """Probe j of every bin shares its other factors, lighting, background and shift, and its offset within the
    bin (common random numbers): each bin's mean stays unbiased and what is common cancels between bins."""
    pathwise_lighting: bool = True
    """Lighting weights by the pathwise gradient over the training set (else they stay)."""

    optimises_psi = True

    def __post_init__(self):
        if self.probes_per_bin < 1:
            raise UserError(f"influence needs probes_per_bin ≥ 1, got {self.probes_per_bin}.")

    def estimate(self, psi, train, task, v, *, render, render_vjp, generator, clock, replay_batch):
        return influence(psi, train, task, v, render, generator, self.probes_per_bin,
                         render_vjp if self.pathwise_lighting else None, replay_batch, clock, self.paired_probes)


def probe_bin_means(obj: ObjectPsi, factor: str, name: str, render: Render, task: SecondOrderTask, v: Tensor,
                    probes: int, generator: torch.Generator, clock: PhaseClock | None = None,
                    paired: bool = False) -> Tensor:
    """m_i = E[∇θ l(x, θ)·v | V_factor in bin i], (k,): `probes` renders per bin at stratified offsets within
    the bin, the other factors drawn from ψ — independently for every render, or, `paired`, once per probe
    index and shared by all bins."""
    k = obj.factors[factor].k
    noise = obj.draw_noise(probes, generator).select(torch.arange(probes).repeat(k)) if paired \
        else obj.draw_noise(k * probes, generator)
    params = obj.discrete(noise)
    bins = torch.arange(k).repeat_interleave(probes)  # (k·P,)
    jitter = (torch.arange(probes, dtype=v.dtype).repeat(k) + noise.factors[factor].jitter) / probes
    values = obj.factors[factor].value_in_bin(bins, jitter)
    tensors = dict(zip(RenderParams.CONTINUOUS, params.tensors())) | {FIELD_OF[factor]: values}
    params = RenderParams(**tensors, bins=params.bins | {factor: bins}, placement=params.placement)
    clock = clock or PhaseClock()
    with clock("probe_render"), torch.no_grad():
        images, targets = render(name, params)
    clock.count("probe_renders", len(params))
    with clock("grad_dot"):
        return task.grad_dot(images, targets, v).reshape(k, probes).mean(dim=1)


def influence(psi: Psi, train: TrainingSet, task: SecondOrderTask, v: Tensor, render: Render,
              generator: torch.Generator, probes_per_bin: int = 4, render_vjp: RenderVJP | None = None,
              replay_batch: int = 1, clock: PhaseClock | None = None,
              paired_probes: bool = False) -> dict[str, Tensor]:
    """h per trainable leaf: each categorical factor's logits from its bin means, the lighting weights by the
    pathwise gradient over the training set when `render_vjp` is given."""
    grads: dict[str, Tensor] = {}
    for draws in train.draws:
        obj = psi.objects[draws.obj]
        weight = (draws.rows.stop - draws.rows.start) / len(train)  # n_o / N
        for f in FACTORS:
            logits = obj.factors[f].logits
            if not logits.requires_grad:
                continue
            m = probe_bin_means(obj, f, draws.obj, render, task, v, probes_per_bin, generator, clock,
                                paired_probes)  # (k,)
            grads[f"{draws.obj}/{f}"] = torch.autograd.grad(obj.factors[f].probs(), logits, -weight * m)[0]
    if render_vjp is not None:
        # the appearance leaves alpha, and so the boxes, unchanged: no label term
        grads = add_grads(grads, pathwise(psi, train, task, v, render_vjp, replay_batch, factors=("lighting",),
                                          labels=False, clock=clock))
    return grads
