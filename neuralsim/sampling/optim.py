"""ψ optimisers: SGD, normalised SGD, Adam and gated dual averaging on ψ's leaves (logits, lighting weights), given
a hypergradient; simplex-parameterised lighting is projected back after each step. The step size is checked, never
silently 0."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from neuralsim.errors import UserError
from neuralsim.sampling.psi import Psi

METHODS = ("sgd", "normalized", "adam", "gated")


@dataclass
class PsiOptimizerConfig:
    """The ψ step. `normalized`: ψ ← ψ − lr·h/‖h‖ (‖·‖ over all trainable leaves together), so the step
    length is lr whatever the hypergradient's raw scale — and K objects with gradients of similar size each move
    by about lr/√K, so scale lr with √K when comparing runs with different numbers of objects; `adam` adapts per
    coordinate; `sgd` uses h as is.

    `gated`: dual averaging of the normalised steps with a significance gate. With u_1 … u_t the steps `normalized`
    would have taken (without lr), ψ_t = ψ_0 − lr·t·S(ū_t, gate·se_t): ū_t is their mean, se_t its standard error
    per coordinate (their spread over the steps /√t) and S the soft threshold, sign(x)·max(|x| − c, 0). A
    coordinate moves away from ψ_0 only as far as its mean direction stands out of its step-to-step noise; with
    gate = 0 it is exactly `normalized` on the bin logits (ψ_t = ψ_0 − lr·Σu; simplex lighting weights are projected
    once from ψ_0 − lr·Σu rather than after every step, which can differ at the simplex's boundary). A linear filter
    (momentum, Adam's first moment) cannot do this: it leaves the end point the same sum of noisy steps. With a gate
    the first step moves nothing (no spread yet)."""

    method: str = "normalized"
    lr: float = 0.5
    natural: bool = True
    """Precondition each categorical's logit gradient by the inverse Fisher information of the categorical
    (mirror descent on the simplex): the logit of bin i moves by ∂L/∂p_i − mean_j ∂L/∂p_j instead of
    p_i(∂L/∂p_i − Σ_j p_j ∂L/∂p_j), so mass flows to a better bin at a rate that does not shrink with
    that bin's current probability. Lighting weights on the simplex are left as they are."""
    per_object: bool = False
    """`normalized` and `gated`: divide by the root-mean-square of the objects' gradient norms instead of their total norm,
    so that an object moves by lr on average whatever the number of objects (K objects: the step is √K times the
    plain normalised one). Objects with larger gradients still move further than others."""
    gate: float = 1.0
    """`gated` only: the threshold in standard errors."""
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"ψ optimiser must be one of {METHODS}, not {self.method!r}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"ψ step size (lr) must be a positive finite number, got {self.lr}.")
        if not (math.isfinite(self.gate) and self.gate >= 0):
            raise UserError(f"ψ optimiser gate must be a finite number ≥ 0 (standard errors), got {self.gate}.")


class PsiOptimizer:
    """Steps ψ's trainable leaves in place along −h (h estimates dL_val/dψ)."""

    def __init__(self, psi: Psi, config: PsiOptimizerConfig):
        self.psi, self.config = psi, config
        self.t = 0
        self.m: dict[str, Tensor] = {}  # adam: first moment; gated: sum of the unit steps
        self.s: dict[str, Tensor] = {}  # adam: second moment; gated: sum of their squares
        self.origin = {name: t.detach().clone() for name, t in psi.trainable().items()}  # gated: ψ_0

    def step(self, hypergradient: dict[str, Tensor]) -> float:
        """Apply one step; returns its length ‖Δψ‖. A non-finite hypergradient stops with a clear message."""
        params = self.psi.trainable()
        missing = set(params) - set(hypergradient)
        if missing:
            raise ValueError(f"hypergradient lacks ψ leaves {sorted(missing)}")
        for name in params:
            if not torch.isfinite(hypergradient[name]).all():
                raise UserError(f"The hypergradient of ψ '{name}' is not finite (NaN or inf); stopping here — "
                                "the last good checkpoint is kept.")
        if not any(bool(hypergradient[name].any()) for name in params):
            warnings.warn("The hypergradient is exactly 0 for every ψ leaf: ψ does not move this step.", stacklevel=2)
        self.t += 1
        grads = {name: self._tangent(name, hypergradient[name].detach()) for name in params}
        if self.config.natural:
            grads = {name: self._natural(name, g) for name, g in grads.items()}
        deltas = self._deltas(grads)
        with torch.no_grad():
            for name, t in params.items():
                t.sub_(deltas[name])
        self.psi.project()
        return float(torch.sqrt(sum((d * d).sum() for d in deltas.values())))

    def _tangent(self, name: str, grad: Tensor) -> Tensor:
        """Simplex lighting weights: the gradient less its mean, its part along the simplex. The part along (1, …, 1)
        would be undone by the projection, and in a normalised step it would shorten every leaf's step."""
        obj, leaf = name.rsplit("/", 1)
        if leaf == "lighting" and self.psi.objects[obj].lighting.parameterisation == "simplex":
            return grad - grad.mean()
        return grad

    def _natural(self, name: str, grad: Tensor) -> Tensor:
        """F⁺∇ for a categorical's logits (F = diag(p) − ppᵀ): ∇/p, centred; other leaves unchanged."""
        obj, leaf = name.rsplit("/", 1)
        if leaf not in self.psi.objects[obj].factors:
            return grad
        p = self.psi.objects[obj].factors[leaf].probs().detach().to(grad.dtype)
        scaled = grad / p.clamp_min(torch.finfo(grad.dtype).tiny)
        return scaled - scaled.mean()

    def _unit(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """h/‖h‖, or h over the root-mean-square of the objects' norms (`per_object`)."""
        norm = torch.sqrt(sum((g * g).sum() for g in grads.values()))
        if self.config.per_object:
            norm = norm / math.sqrt(len({name.rsplit("/", 1)[0] for name in grads}))
        return {n: g / norm.clamp_min(torch.finfo(g.dtype).tiny) for n, g in grads.items()}

    def _gated(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """The step that takes each leaf to ψ_0 − lr·t·S(ū_t, gate·se_t)."""
        t, params, deltas = self.t, self.psi.trainable(), {}
        for n, u in self._unit(grads).items():
            self.m[n] = self.m.get(n, torch.zeros_like(u)) + u
            self.s[n] = self.s.get(n, torch.zeros_like(u)) + u * u
            mean = self.m[n] / t
            if t < 2:  # no spread yet: nothing stands out of it, unless there is no gate
                shrunk = mean if self.config.gate == 0 else torch.zeros_like(mean)
            else:
                se = ((self.s[n] - t * mean * mean).clamp_min(0) / (t - 1) / t).sqrt()
                shrunk = mean.sign() * (mean.abs() - self.config.gate * se).clamp_min(0)
            deltas[n] = params[n].detach() - (self.origin[n] - self.config.lr * t * shrunk)
        return deltas

    def _deltas(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        lr = self.config.lr
        if self.config.method == "sgd":
            return {n: lr * g for n, g in grads.items()}
        if self.config.method == "normalized":
            return {n: lr * u for n, u in self._unit(grads).items()}
        if self.config.method == "gated":
            return self._gated(grads)
        b1, b2 = self.config.betas
        deltas = {}
        for n, g in grads.items():
            self.m[n] = b1 * self.m.get(n, torch.zeros_like(g)) + (1 - b1) * g
            self.s[n] = b2 * self.s.get(n, torch.zeros_like(g)) + (1 - b2) * g * g
            m_hat, s_hat = self.m[n] / (1 - b1**self.t), self.s[n] / (1 - b2**self.t)
            deltas[n] = lr * m_hat / (s_hat.sqrt() + self.config.eps)
        return deltas

    def state_dict(self) -> dict:
        """Plain data for checkpoints (resume continues the same Adam moments, or the same gated sums and ψ_0)."""
        return {"t": self.t, "m": {n: v.tolist() for n, v in self.m.items()},
                "s": {n: v.tolist() for n, v in self.s.items()},
                "origin": {n: v.tolist() for n, v in self.origin.items()}}

    def load_state_dict(self, state: dict) -> None:
        params = self.psi.parameters()
        self.t = int(state["t"])
        self.m = {n: torch.tensor(v, dtype=params[n].dtype) for n, v in state["m"].items()}
        self.s = {n: torch.tensor(v, dtype=params[n].dtype) for n, v in state["s"].items()}
        if "origin" in state:  # checkpoints from before the gated method have none and do not need it
            self.origin = {n: torch.tensor(v, dtype=params[n].dtype) for n, v in state["origin"].items()}
