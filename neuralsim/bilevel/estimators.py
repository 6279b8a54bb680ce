"""Hypergradient estimators h ≈ dL_val/dψ behind one interface, given v = (H + λI)⁻¹∇θL_val:
pathwise (Neural-Sim `nso`), score function (Auto-Sim `autosim`) and per-bin `influence` (ours)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from neuralsim.bilevel.data import Render, RenderVJP, TrainingSet, full_image_vjp
from neuralsim.bilevel.inverse_hvp import InverseHVPConfig, InverseHVPResult, inverse_hvp
from neuralsim.bilevel.task import SecondOrderTask
from neuralsim.errors import UserError
from neuralsim.runtime import PhaseClock
from neuralsim.sampling.bins import FACTORS
from neuralsim.sampling.psi import ObjectPsi, Psi, RenderParams

METHODS = ("nso", "autosim", "influence")
BASELINES = ("leave_one_out", "none")
FIELD_OF = {"azimuth": "azimuth_deg", "elevation": "elevation_deg", "radius": "radius"}


@dataclass
class HypergradientConfig:
    """Which estimator and its settings."""

    method: str = "nso"  # nso | autosim | influence
    tau: float = 0.1  # Tool 1 temperature (nso)
    replay_batch: int = 16
    """Images replayed together in pass 2 (nso, and influence's continuous part): e_j of a batch costs one double
    backward through the detector (on the 2-core CPU 4.5× cheaper per image than one at a time at 64 px, 2× at
    128 px); the render VJP stays per image and patch-wise, so the renderer's memory does not grow with it."""
    pathwise_labels: bool = True  # nso: the boxes move with the render (where the task and the renderer allow it)
    baseline: str = "leave_one_out"  # autosim: b_j = mean of the other images' ∇θl·v of the same object, or none
    probes_per_bin: int = 4  # influence: stratified probe renders per bin
    paired_probes: bool = False
    """influence: probe j of every bin shares its other factors, lighting, background and shift, and its offset
    within the bin (common random numbers). Each bin's mean stays unbiased; what is common to the probes cancels
    in the differences between bins, which is all the logits' gradient uses."""
    influence_pathwise_lighting: bool = True  # influence: lighting weights by the pathwise gradient
    inverse_hvp: InverseHVPConfig = field(default_factory=InverseHVPConfig)

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"hypergradient method must be one of {METHODS}, not {self.method!r}.")
        if self.baseline not in BASELINES:
            raise UserError(f"score-function baseline must be one of {BASELINES}, not {self.baseline!r}.")
        if not self.tau > 0 or self.replay_batch < 1 or self.probes_per_bin < 1:
            raise UserError("hypergradient settings: tau > 0, replay_batch ≥ 1 and probes_per_bin ≥ 1.")

    @property
    def draw_tau(self) -> float | None:
        """τ for pass 1: relaxed draws for `nso`, exact discrete draws (None) for the others."""
        return self.tau if self.method == "nso" else None


@dataclass(frozen=True)
class Hypergradient:
    grads: dict[str, Tensor]  # ψ leaf name → dL_val/d(leaf), descent direction −grads
    inverse: InverseHVPResult  # v, its residual and the HVPs spent
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time per phase: val_grad, inverse_hvp (v), mixed (e_j) and render_vjp (pass 2) for nso; probe_render
    and grad_dot for influence; grad_dot for autosim. The renders beyond the training set are tallied on the clock
    (`PhaseClock.counts`: probe_renders, replay_renders). With a `clock` passed in, this is that clock's whole
    record, the caller's earlier phases (the loop's render and train) included."""


def _grads_of(objective: Tensor | None, leaves: dict[str, Tensor]) -> dict[str, Tensor]:
    """∂objective/∂leaf for each leaf, zeros where the objective does not depend on it."""
    if objective is None or not objective.requires_grad:
        return {n: torch.zeros_like(t) for n, t in leaves.items()}
    grads = torch.autograd.grad(objective, list(leaves.values()), allow_unused=True)
    return {n: torch.zeros_like(t) if g is None else g for (n, t), g in zip(leaves.items(), grads)}


def _add(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    return {n: a.get(n, 0) + b[n] for n in b} | {n: a[n] for n in a if n not in b}


def pathwise(psi: Psi, train: TrainingSet, task: SecondOrderTask, v: Tensor, render_vjp: RenderVJP,
             replay_batch: int = 1, factors: tuple[str, ...] = (*FACTORS, "lighting"),
             labels: bool = True, clock: PhaseClock | None = None) -> dict[str, Tensor]:
    """Neural-Sim: h = −(1/N) Σ_j e_j · ∂x_j/∂ψ, e_j = ∂/∂x_j[∇θ l(x_j, θ)·v] (Tool 2 pass 2: each sample
    replayed from its noise, e_j pulled back through the renderer, then through the sampler and softmax).

    With `labels` and a task that has `mixed_with_boxes`, the derivative includes the labels: each image's
    boxes move with the render, e_b = ∂/∂b_j[∇θ l·v] pulled back through the boxes' sub-pixel edges. Without
    it a zoom or a turn of the object would be scored against the box it had before it moved."""
    clock = clock or PhaseClock()
    n_total = len(train)
    with_boxes = labels and hasattr(task, "mixed_with_boxes")
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
                    cotangents = (e, e_boxes, [t["boxes"] for t in train.targets[rows]])
                else:
                    cotangents = (task.mixed(train.images[rows], train.targets[rows], v),)
            with clock("render_vjp"):
                upstream = render_vjp(draws.obj, params.detach(), *cotangents)  # ∂(⟨x, e⟩ [+ ⟨b, e_b⟩])/∂params
            clock.count("replay_renders", len(params))  # rendered again, with gradients (pass 2)
            surrogate = sum((p * u).sum() for p, u in zip(params.tensors(), upstream.tensors()) if p.requires_grad)
            grads = _add(grads, _grads_of(-surrogate / n_total if torch.is_tensor(surrogate) else None, leaves))
    return grads


def score_function(psi: Psi, train: TrainingSet, task: SecondOrderTask, v: Tensor,
                   baseline: str = "leave_one_out", clock: PhaseClock | None = None) -> dict[str, Tensor]:
    """Auto-Sim: h = −(1/N) Σ_j (∇θ l(x_j, θ)·v − b_j) ∇ψ log p(V_j), on exact discrete draws."""
    if train.tau is not None:
        raise ValueError("the score-function estimator needs a training set of discrete draws (tau=None)")
    with (clock or PhaseClock())("grad_dot"):
        g = task.grad_dot(train.images, train.targets, v).detach()  # (N,)
    surrogate = None
    for draws in train.draws:
        g_o = g[draws.rows]
        n_o = len(g_o)
        b = (g_o.sum() - g_o) / (n_o - 1) if baseline == "leave_one_out" and n_o > 1 else torch.zeros_like(g_o)
        term = ((g_o - b) * psi.objects[draws.obj].log_prob(draws.params.bins)).sum()
        surrogate = term if surrogate is None else surrogate + term
    return _grads_of(-surrogate / len(train), psi.trainable())


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
    """Ours: dL_val/dp_{o,i} ≈ −(n_o/N)·m_i per categorical factor, then the softmax Jacobian (by autograd);
    lighting weights by the pathwise gradient over the training set when `render_vjp` is given."""
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
        grads = _add(grads, pathwise(psi, train, task, v, render_vjp, replay_batch, factors=("lighting",), labels=False,
                                     clock=clock))
    return grads


def hypergradient(psi: Psi, train: TrainingSet, task: SecondOrderTask, config: HypergradientConfig, *,
                  render: Render, generator: torch.Generator, render_vjp: RenderVJP | None = None,
                  clock: PhaseClock | None = None) -> Hypergradient:
    """v = (H + λI)⁻¹∇θL_val, then the configured estimator; every trainable ψ leaf gets a gradient."""
    clock = clock or PhaseClock()
    with clock("val_grad"):
        g = task.val_grad()
    with clock("inverse_hvp"):
        inverse = inverse_hvp(task.hvp, g, config.inverse_hvp)
    vjp = render_vjp or full_image_vjp(render)
    if config.method == "nso":
        grads = pathwise(psi, train, task, inverse.v, vjp, config.replay_batch, labels=config.pathwise_labels,
                         clock=clock)
    elif config.method == "autosim":
        grads = score_function(psi, train, task, inverse.v, config.baseline, clock)
    else:
        grads = influence(psi, train, task, inverse.v, render, generator, config.probes_per_bin,
                          vjp if config.influence_pathwise_lighting else None, config.replay_batch, clock,
                          config.paired_probes)
    zeros = {n: torch.zeros_like(t) for n, t in psi.trainable().items()}
    return Hypergradient({n: grads.get(n, zeros[n]) for n in zeros}, inverse, dict(clock.seconds))
