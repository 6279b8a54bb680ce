"""ψ optimisers: descent direction, normalised step length, Adam, simplex projection, bad settings."""

import pytest
import torch

from neuralsim.errors import UserError
from neuralsim.sampling.init import PsiInit, init_psi
from neuralsim.sampling.optim import PsiOptimizer, PsiOptimizerConfig
from neuralsim.sampling.psi import DTYPE


def make_psi():
    return init_psi(PsiInit(["o"], lighting=["a", "b", "c"])).set_trainable(["azimuth", "lighting"])


@pytest.mark.parametrize("method", ["sgd", "normalized", "adam"])
def test_step_descends_a_quadratic(method):
    psi = make_psi()
    target = torch.linspace(-1, 1, 8, dtype=DTYPE)
    opt = PsiOptimizer(psi, PsiOptimizerConfig(method=method, lr=0.05))
    logits = psi.objects["o"].factors["azimuth"].logits

    def loss():
        return float(((logits.detach() - target) ** 2).sum())

    start = loss()
    for _ in range(20):
        grads = {n: torch.zeros_like(t) for n, t in psi.trainable().items()}
        grads["o/azimuth"] = 2 * (logits.detach() - target)
        opt.step(grads)
    assert loss() < 0.5 * start


def test_normalized_step_has_length_lr_and_lighting_stays_on_simplex():
    psi = make_psi()
    opt = PsiOptimizer(psi, PsiOptimizerConfig(method="normalized", lr=0.3))
    grads = {"o/azimuth": torch.full((8,), 1e-9, dtype=DTYPE), "o/lighting": torch.tensor([1e-9, 0, -5e-9], dtype=DTYPE)}
    assert opt.step(grads) == pytest.approx(0.3, rel=0.2)  # the projection can shorten the lighting part
    w = psi.objects["o"].lighting.weights()
    assert torch.all(w >= 0) and torch.isclose(w.sum(), torch.tensor(1.0, dtype=DTYPE))
    assert w[2] > w[0]


def test_a_common_shift_of_the_lighting_gradient_neither_moves_nor_shortens_the_step():
    psi = make_psi()
    opt = PsiOptimizer(psi, PsiOptimizerConfig(method="normalized", lr=0.1))
    before = psi.objects["o"].lighting.weights().clone()
    logits_before = psi.objects["o"].factors["azimuth"].logits.detach().clone()
    azimuth = torch.linspace(-1, 1, 8, dtype=DTYPE)
    grads = {"o/azimuth": azimuth * 1e-3, "o/lighting": torch.full((3,), 50.0, dtype=DTYPE)}  # all along (1, 1, 1)
    assert opt.step(grads) == pytest.approx(0.1)  # the whole step goes to the logits
    assert torch.allclose(psi.objects["o"].lighting.weights(), before)
    moved = logits_before - psi.objects["o"].factors["azimuth"].logits.detach()
    assert torch.allclose(moved, 0.1 * azimuth / azimuth.norm())


@pytest.mark.parametrize("objects", [1, 4, 21])
def test_per_object_step_does_not_shrink_with_the_number_of_objects(objects):
    names = [f"o{i}" for i in range(objects)]
    psi = init_psi(PsiInit(names)).set_trainable(["azimuth"])
    grad = torch.linspace(-1, 1, 8, dtype=DTYPE)
    grads = {f"{o}/azimuth": grad.clone() for o in names}
    shared = PsiOptimizer(init_psi(PsiInit(names)).set_trainable(["azimuth"]), PsiOptimizerConfig(lr=0.3))
    assert shared.step(grads) == pytest.approx(0.3)  # the plain step's length is lr in all
    before = psi.objects["o0"].factors["azimuth"].logits.detach().clone()
    PsiOptimizer(psi, PsiOptimizerConfig(lr=0.3, per_object=True)).step(grads)
    moved = psi.objects["o0"].factors["azimuth"].logits.detach() - before
    assert float(moved.norm()) == pytest.approx(0.3)  # each object's step is lr, whatever their number
    assert float((moved * grad).sum()) < 0


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan")])
def test_step_size_never_silently_zero(lr):
    with pytest.raises(UserError, match="step size"):
        PsiOptimizerConfig(lr=lr)


def test_nan_hypergradient_stops_with_a_clear_message():
    psi = make_psi()
    opt = PsiOptimizer(psi, PsiOptimizerConfig())
    before = psi.objects["o"].factors["azimuth"].logits.clone()
    grads = {n: torch.zeros_like(t) for n, t in psi.trainable().items()}
    grads["o/azimuth"][3] = float("nan")
    with pytest.raises(UserError, match="not finite"):
        opt.step(grads)
    assert torch.equal(before, psi.objects["o"].factors["azimuth"].logits)


def test_adam_state_round_trip():
    psi = make_psi()
    opt = PsiOptimizer(psi, PsiOptimizerConfig(method="adam", lr=0.1))
    opt.step({n: torch.ones_like(t) for n, t in psi.trainable().items()})
    other = PsiOptimizer(psi, PsiOptimizerConfig(method="adam", lr=0.1))
    other.load_state_dict(opt.state_dict())
    assert other.t == 1 and torch.equal(other.m["o/azimuth"], opt.m["o/azimuth"])


def _linear_loss_steps(natural: bool, steps: int) -> torch.Tensor:
    """ψ_azimuth starts with bin 5 at 0.8; L = Σ c_i p_i is lowest for bin 1 (dL/dp = c exactly)."""
    psi = make_psi()
    factor = psi.objects["o"].factors["azimuth"]
    with torch.no_grad():
        factor.logits.copy_(torch.log(torch.tensor([0.2 / 7] * 5 + [0.8] + [0.2 / 7] * 2, dtype=DTYPE)))
    c = torch.tensor([0.5, 0.0, 0.4, 0.5, 0.6, 0.7, 0.6, 0.5], dtype=DTYPE)
    opt = PsiOptimizer(psi, PsiOptimizerConfig(method="normalized", lr=0.5, natural=natural))
    for _ in range(steps):
        grad = torch.autograd.grad((factor.probs() * c).sum(), factor.logits)[0]
        opt.step({"o/azimuth": grad, "o/lighting": torch.zeros(3, dtype=DTYPE)})
    return factor.probs().detach()


def test_natural_gradient_moves_mass_to_the_best_bin_whatever_its_probability():
    psi = make_psi()
    factor = psi.objects["o"].factors["azimuth"]
    c = torch.linspace(0, 1, 8, dtype=DTYPE)
    grad = torch.autograd.grad((factor.probs() * c).sum(), factor.logits)[0]
    before = factor.logits.detach().clone()
    PsiOptimizer(psi, PsiOptimizerConfig(method="sgd", lr=0.1, natural=True)).step(
        {"o/azimuth": grad, "o/lighting": torch.zeros(3, dtype=DTYPE)})
    torch.testing.assert_close(factor.logits.detach() - before, -0.1 * (c - c.mean()))  # F⁺∇ = ∂L/∂p, centred
    # Early on, the plain step drains bin 5 into every bin alike; the natural one into the best bin.
    plain, natural = _linear_loss_steps(False, 4), _linear_loss_steps(True, 4)
    others = [0, 2, 3, 4, 6, 7]
    assert natural[1] / natural[others].max() > 1.5 * plain[1] / plain[others].max()
    assert _linear_loss_steps(True, 12)[1] > 0.9


def _gated_run(grads: list[dict[str, torch.Tensor]], config: PsiOptimizerConfig, resume_at: int | None = None):
    """ψ after stepping through `grads` (names o0…/azimuth), optionally rebuilt from its state mid-way."""
    names = sorted({n.split("/")[0] for n in grads[0]})
    psi = init_psi(PsiInit(names)).set_trainable(["azimuth"])
    opt = PsiOptimizer(psi, config)
    current = {n: leaf.detach().clone() for n, leaf in psi.trainable().items()}
    for t, g in enumerate(grads):
        if t == resume_at:
            state, psi = opt.state_dict(), init_psi(PsiInit(names)).set_trainable(["azimuth"])
            with torch.no_grad():
                for n, leaf in psi.trainable().items():
                    leaf.copy_(current[n])
            opt = PsiOptimizer(psi, config)
            opt.load_state_dict(state)
        opt.step(g)
        current = {n: leaf.detach().clone() for n, leaf in psi.trainable().items()}
    return torch.stack([current[f"{o}/azimuth"] for o in names])


def _noisy_grads(steps: int, signal: torch.Tensor, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Object o0 has a steady direction `signal` under unit noise, o1…o3 only noise."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        g = {f"o{i}/azimuth": torch.randn(8, generator=gen, dtype=DTYPE) for i in range(4)}
        g["o0/azimuth"] = g["o0/azimuth"] + signal
        out.append(g)
    return out


def test_gated_without_a_gate_is_the_normalized_step():
    grads = _noisy_grads(6, torch.linspace(-1, 1, 8, dtype=DTYPE))
    for per_object in (False, True):
        plain = _gated_run(grads, PsiOptimizerConfig(method="normalized", lr=0.4, per_object=per_object))
        gated = _gated_run(grads, PsiOptimizerConfig(method="gated", gate=0.0, lr=0.4, per_object=per_object))
        torch.testing.assert_close(gated, plain)


def test_gated_step_keeps_noise_at_psi0_and_follows_a_steady_signal():
    signal = 1.5 * torch.linspace(-1, 1, 8, dtype=DTYPE)
    start = _gated_run(_noisy_grads(1, signal), PsiOptimizerConfig(method="gated", lr=0.4, natural=False))
    origin = init_psi(PsiInit(["o0"])).objects["o0"].factors["azimuth"].logits.detach()
    torch.testing.assert_close(start, origin.expand(4, 8))  # no spread after one step: nothing moves
    plain_noise, gated_noise, gated_signal = [], [], []
    for seed in range(5):
        grads = _noisy_grads(16, signal, seed)
        plain = _gated_run(grads, PsiOptimizerConfig(method="normalized", lr=0.4, per_object=True, natural=False)) - origin
        gated = _gated_run(grads, PsiOptimizerConfig(method="gated", gate=1.0, lr=0.4, per_object=True, natural=False)) - origin
        plain_noise.append(plain[1:].norm(dim=1).mean())
        gated_noise.append(gated[1:].norm(dim=1).mean())
        gated_signal.append(torch.nn.functional.cosine_similarity(-gated[0], signal, dim=0))
    assert sum(gated_noise) < 0.5 * sum(plain_noise)  # the noise-only objects wander less than half as far
    assert min(gated_signal) > 0.85  # the object with a signal still moves along it (in logit space: natural=False)


def test_gated_resume_continues_to_the_same_psi():
    grads = _noisy_grads(7, torch.linspace(-1, 1, 8, dtype=DTYPE))
    config = PsiOptimizerConfig(method="gated", lr=0.4, per_object=True)
    torch.testing.assert_close(_gated_run(grads, config, resume_at=4), _gated_run(grads, config))


@pytest.mark.parametrize("gate", [-1.0, float("inf"), float("nan")])
def test_gate_must_be_finite_and_not_negative(gate):
    with pytest.raises(UserError, match="gate"):
        PsiOptimizerConfig(method="gated", gate=gate)


def test_a_zero_hypergradient_warns_that_psi_stays():
    psi = make_psi()
    opt = PsiOptimizer(psi, PsiOptimizerConfig())
    with pytest.warns(UserWarning, match="exactly 0"):
        assert opt.step({n: torch.zeros_like(t) for n, t in psi.trainable().items()}) == 0.0
