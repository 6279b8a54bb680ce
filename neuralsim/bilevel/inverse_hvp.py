"""v = (H + λI)⁻¹ g from Hessian-vector products: conjugate gradient (default), Neumann series, or identity.
The relative residual ‖(H + λI)v − g‖/‖g‖ is returned for logging."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from neuralsim.errors import UserError

HVP = Callable[[Tensor], Tensor]  # (m,) → (m,): v ↦ H v
METHODS = ("cg", "neumann", "identity")


@dataclass
class InverseHVPConfig:
    """How to apply (H + λI)⁻¹: `cg` (conjugate gradient, H must be positive definite after damping),
    `neumann` (v = α Σ_i (I − α(H + λI))^i g, needs α < 2/λ_max), or `identity` (v = g)."""

    method: str = "cg"
    damping: float = 0.1  # λ
    iterations: int = 10  # CG iterations or Neumann terms
    tol: float = 1e-6  # CG stops when the relative residual falls below this
    neumann_scale: float = 0.1  # α

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"inverse-HVP method must be one of {METHODS}, not {self.method!r}.")
        if self.damping < 0 or self.iterations < 1 or self.tol < 0 or self.neumann_scale <= 0:
            raise UserError("inverse-HVP settings: damping ≥ 0, iterations ≥ 1, tol ≥ 0 and neumann_scale > 0.")


@dataclass(frozen=True)
class InverseHVPResult:
    v: Tensor  # (m,)
    residual: float  # ‖(H + λI)v − g‖ / ‖g‖
    iterations: int  # HVPs spent (not counting the residual check)
    negative_curvature: bool = False  # CG met a direction of non-positive curvature and stopped there


def conjugate_gradient(apply_a: HVP, g: Tensor, iterations: int, tol: float,
                       stopped: list[bool] | None = None) -> tuple[Tensor, int]:
    """Solve A v = g for symmetric positive definite A given as a callable, from v = 0.

    A detector's Hessian need not be positive definite even after damping: on a direction of non-positive
    curvature CG stops (truncated CG, as in Newton-CG) and returns its iterate so far, or g itself if that
    happens at once, instead of stepping to a meaningless point; `stopped` (if given) gets True appended then.
    The residual of that g can be large (it is ‖Ag − g‖/‖g‖), though g is the usual first-order direction."""
    v = torch.zeros_like(g)
    r = g.clone()
    d = r.clone()
    rr = r @ r
    g_norm = torch.sqrt(g @ g)
    for i in range(iterations):
        if torch.sqrt(rr) <= tol * g_norm:
            return v, i
        ad = apply_a(d)
        curvature = d @ ad
        if curvature <= 0:
            if stopped is not None:
                stopped.append(True)
            return (g.clone() if i == 0 else v), i + 1
        alpha = rr / curvature
        v = v + alpha * d
        r = r - alpha * ad
        rr_new = r @ r
        d = r + (rr_new / rr) * d
        rr = rr_new
    return v, iterations


def neumann(apply_a: HVP, g: Tensor, iterations: int, scale: float) -> Tensor:
    """α Σ_{i=0}^{n} (I − αA)^i g, a truncated series for A⁻¹ g."""
    term, total = g.clone(), g.clone()
    for _ in range(iterations):
        term = term - scale * apply_a(term)
        total = total + term
    return scale * total


def inverse_hvp(hvp: HVP, g: Tensor, config: InverseHVPConfig) -> InverseHVPResult:
    """v ≈ (H + λI)⁻¹ g with the configured method, and its relative residual."""

    def apply_a(x: Tensor) -> Tensor:
        return hvp(x) + config.damping * x

    stopped: list[bool] = []
    if config.method == "cg":
        v, spent = conjugate_gradient(apply_a, g, config.iterations, config.tol, stopped)
    elif config.method == "neumann":
        v, spent = neumann(apply_a, g, config.iterations, config.neumann_scale), config.iterations
    else:
        v, spent = g.clone(), 0
    residual = torch.linalg.vector_norm(apply_a(v) - g) / torch.linalg.vector_norm(g).clamp_min(1e-300)
    return InverseHVPResult(v.detach(), float(residual), spent, bool(stopped))
