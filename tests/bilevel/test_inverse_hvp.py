"""(H + λI)⁻¹ g: CG against a dense solve, Neumann, identity, the residual, bad settings; HVPs by autograd."""

import pytest
import torch

from neuralsim.bilevel.inverse_hvp import InverseHVPConfig, inverse_hvp
from neuralsim.errors import UserError


def spd(m: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, m, generator=g, dtype=torch.float64)
    return a @ a.T / m + 0.1 * torch.eye(m, dtype=torch.float64)


def test_cg_matches_dense_solve():
    h = spd(30)
    g = torch.randn(30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    result = inverse_hvp(lambda v: h @ v, g, InverseHVPConfig(damping=0.05, iterations=200, tol=1e-12))
    exact = torch.linalg.solve(h + 0.05 * torch.eye(30, dtype=torch.float64), g)
    torch.testing.assert_close(result.v, exact, rtol=1e-8, atol=1e-10)
    assert result.residual < 1e-10 and result.iterations <= 60


def test_cg_reports_residual_when_stopped_early_and_neumann_converges():
    h = spd(30)
    g = torch.ones(30, dtype=torch.float64)
    early = inverse_hvp(lambda v: h @ v, g, InverseHVPConfig(damping=0.0, iterations=3))
    assert early.iterations == 3 and 1e-6 < early.residual < 1
    lam_max = float(torch.linalg.eigvalsh(h)[-1])
    series = inverse_hvp(lambda v: h @ v, g, InverseHVPConfig(method="neumann", damping=0.5, iterations=400,
                                                              neumann_scale=1.0 / (lam_max + 0.5)))
    assert series.residual < 1e-6
    identity = inverse_hvp(lambda v: h @ v, g, InverseHVPConfig(method="identity"))
    assert torch.equal(identity.v, g) and identity.iterations == 0


def test_bad_settings():
    with pytest.raises(UserError, match="method"):
        InverseHVPConfig(method="lissa")
    with pytest.raises(UserError, match="damping"):
        InverseHVPConfig(damping=-1.0)


def test_autograd_hvp_and_val_grad_match_the_closed_form(toy):
    from neuralsim.bilevel.toy import features

    x, y = toy.val
    theta = torch.randn(x[0].numel() + 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.3
    task = toy.task(theta, x, y)
    f = features(x)
    s = torch.sigmoid(f @ theta)
    hess = (f.T * (s * (1 - s))) @ f / len(f) + toy.config.l2 * torch.eye(len(theta), dtype=torch.float64)
    v = torch.randn(len(theta), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(task.hvp(v), hess @ v)
    grad = f.T @ (s - y) / len(f) + toy.config.l2 * theta
    torch.testing.assert_close(task.val_grad(), grad)
    torch.testing.assert_close(task.val_grad(), grad)  # computed afresh: no accumulation on a second call


def test_cg_stops_on_negative_curvature():
    from neuralsim.bilevel.inverse_hvp import conjugate_gradient

    a = torch.diag(torch.tensor([2.0, -1.0], dtype=torch.float64))
    g = torch.tensor([1.0, 1.0], dtype=torch.float64)
    v, spent = conjugate_gradient(lambda x: a @ x, g, iterations=10, tol=1e-12)
    assert torch.isfinite(v).all() and spent <= 2
    assert float(v @ g) > 0  # still a direction that agrees with g
    v0, spent0 = conjugate_gradient(lambda x: -x, g, iterations=10, tol=1e-12)
    assert spent0 == 1 and torch.equal(v0, g)
    from neuralsim.bilevel.inverse_hvp import InverseHVPConfig, inverse_hvp

    assert inverse_hvp(lambda x: a @ x, g, InverseHVPConfig(damping=0.0)).negative_curvature
    assert not inverse_hvp(lambda x: a.abs() @ x, g, InverseHVPConfig(damping=0.0)).negative_curvature
