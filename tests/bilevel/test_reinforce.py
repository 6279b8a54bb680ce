"""LTS REINFORCE: unbiased for the gradient of the expected reward; the moving-average baseline carried as state."""

import torch

from neuralsim.bilevel.estimators import SecondOrderConfig, StepInputs
from neuralsim.bilevel.estimators.lts import LTSConfig
from neuralsim.clock import PhaseClock
from neuralsim.sampling.psi import DTYPE


def test_reinforce_mean_matches_the_exact_gradient_of_expected_reward(toy):
    psi = toy.psi(trainable=("azimuth",))
    reward_of_bin = torch.linspace(-1.0, 1.0, 8, dtype=DTYPE) ** 2  # R(dataset) = mean over images of r(bin)

    def train(model, rendered):  # the "detector" remembers the bins it was trained on
        model["bins"] = torch.cat([d.params.bins["azimuth"] for d in rendered.draws])

    def val_loss(model):
        return -float(reward_of_bin[model["bins"]].mean())

    lts = LTSConfig(datasets=400, baseline_decay=0.5)
    g = torch.Generator().manual_seed(0)
    counts = {"a": 3, "b": 3}

    def step(state):
        return lts.step(StepInputs(psi, counts, toy.render, None, {}, train, None, val_loss, 0, SecondOrderConfig(), g,
                                   PhaseClock(), state))

    first = step({})  # sets the baseline
    assert first.state["baseline"] == sum(first.rewards) / 400
    outcome = step(first.state)
    assert len(outcome.rewards) == 400 and outcome.detector_trainings == 400 and outcome.training_renders == 2400
    assert outcome.model["bins"].shape == (6,)  # the first copy goes on as the run's detector
    assert outcome.state["baseline"] == 0.5 * first.state["baseline"] + 0.5 * sum(outcome.rewards) / 400
    for obj in counts:
        p = psi.objects[obj].factors["azimuth"].probs().detach()
        # E[R] = Σ_i p_i r_i per object (each object contributes half of the images): d(−E[R])/da = −J r / 2
        exact = -(p * reward_of_bin - p * (p @ reward_of_bin)) / 2
        got = outcome.grads[f"{obj}/azimuth"]
        assert torch.nn.functional.cosine_similarity(got, exact, dim=0) > 0.9
        assert (got - exact).norm() < 0.35 * exact.norm()
