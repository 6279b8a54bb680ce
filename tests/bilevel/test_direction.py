"""Known-answer direction test of every method through the loop's own interface (`method.step`): on the toy,
whose validation views all come from azimuth bin 1 while ψ starts with bin 5 at 0.8, a few ψ steps must move mass
to bin 1. The same steps with h's sign flipped must move it away, so a sign error cannot pass."""

import pytest
import torch

from neuralsim.bilevel.data import full_image_vjp
from neuralsim.bilevel.estimators import METHODS, SecondOrderConfig, StepInputs, method_config
from neuralsim.bilevel.inverse_hvp import InverseHVPConfig
from neuralsim.bilevel.toy import fit
from neuralsim.clock import PhaseClock
from neuralsim.sampling.optim import PsiOptimizer, PsiOptimizerConfig

TARGET_BIN, STEPS = 1, 6


def target_mass_after_steps(toy, method: str, sign: float) -> tuple[float, float]:
    """p(target bin) of ψ before and after STEPS steps of `method`, ψ stepped along −sign·h."""
    psi = toy.psi(trainable=("azimuth",))
    optimizer = PsiOptimizer(psi, PsiOptimizerConfig(lr=0.5))
    config = method_config(method)
    before = float(psi.objects["a"].factors["azimuth"].probs().detach()[TARGET_BIN])
    state = {}

    def train(model, rendered):  # the "detector" is the logistic θ*, fitted exactly
        model["theta"] = fit(rendered.images, rendered.targets, toy.config.l2)

    for t in range(STEPS):
        generator = torch.Generator().manual_seed(t)
        outcome = config.step(StepInputs(
            psi=psi, counts={"a": 16, "b": 16}, render=toy.render, render_vjp=full_image_vjp(toy.render),
            model={}, train=train, task=lambda model, rendered: toy.task(model["theta"], rendered.images, rendered.targets),
            val_loss=lambda model: toy.val_loss(model["theta"]), shots=0,
            second_order=SecondOrderConfig(inverse_hvp=InverseHVPConfig(damping=0.0, iterations=100, tol=1e-12)),
            generator=generator, clock=PhaseClock(), state=state))
        state = outcome.state
        optimizer.step({n: sign * g for n, g in outcome.grads.items()})
    return before, float(psi.objects["a"].factors["azimuth"].probs().detach()[TARGET_BIN])


@pytest.mark.parametrize("method", [m for m in METHODS if m != "ns"])
def test_every_method_moves_psi_toward_the_target_bin(toy, method):
    before, after = target_mass_after_steps(toy, method, sign=1.0)
    assert after > 1.3 * before, (method, before, after)
    before, flipped = target_mass_after_steps(toy, method, sign=-1.0)
    assert flipped < before, (method, before, flipped)


def test_ns_never_moves_psi(toy):
    psi = toy.psi(trainable=("azimuth",))
    outcome = method_config("ns").step(StepInputs(
        psi, {"a": 4, "b": 4}, toy.render, None, {}, lambda model, rendered: None, None, None, 0, SecondOrderConfig(),
        torch.Generator().manual_seed(0), PhaseClock(), {}))
    assert outcome.grads is None and len(outcome.train) == 8
