"""LTS REINFORCE: unbiased for the gradient of the expected reward; the moving-average baseline."""

import torch

from neuralsim.bilevel.reinforce import Reinforce, ReinforceConfig
from neuralsim.sampling.psi import DTYPE


def test_reinforce_mean_matches_the_exact_gradient_of_expected_reward(toy):
    psi = toy.psi(trainable=("azimuth",))
    reward_of_bin = torch.linspace(-1.0, 1.0, 8, dtype=DTYPE) ** 2  # R(dataset) = mean over images of r(bin)

    def train_and_evaluate(train):
        bins = torch.cat([d.params.bins["azimuth"] for d in train.draws])
        return float(reward_of_bin[bins].mean())

    lts = Reinforce(train_and_evaluate, toy.render, ReinforceConfig(datasets=400, baseline_decay=0.5))
    g = torch.Generator().manual_seed(0)
    counts = {"a": 3, "b": 3}
    lts.hypergradient(psi, counts, g)  # sets the baseline
    grads, rewards = lts.hypergradient(psi, counts, g)
    assert len(rewards) == 400 and lts.baseline is not None
    for obj in counts:
        p = psi.objects[obj].factors["azimuth"].probs().detach()
        # E[R] = Σ_i p_i r_i per object (each object contributes half of the images): d(−E[R])/da = −J r / 2
        exact = -(p * reward_of_bin - p * (p @ reward_of_bin)) / 2
        got = grads[f"{obj}/azimuth"]
        assert torch.nn.functional.cosine_similarity(got, exact, dim=0) > 0.9
        assert (got - exact).norm() < 0.35 * exact.norm()
