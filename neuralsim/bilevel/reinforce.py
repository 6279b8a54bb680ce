"""LTS (Ruiz et al. 2019): REINFORCE on the validation reward. K datasets drawn from ψ, each trained on and
scored; h = −(1/K) Σ_k (R_k − b) ∇ψ log p(dataset_k), b a moving average of the rewards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from neuralsim.bilevel.data import Render, TrainingSet, draw_training_set
from neuralsim.errors import UserError
from neuralsim.sampling.psi import Psi

TrainAndEvaluate = Callable[[TrainingSet], float]  # train a detector on the set, return a reward (−L_val or AP)


@dataclass
class ReinforceConfig:
    datasets: int = 4  # K datasets (detector trainings) per ψ step
    baseline_decay: float = 0.9  # b ← decay·b + (1 − decay)·mean_k R_k

    def __post_init__(self):
        if self.datasets < 1 or not 0.0 <= self.baseline_decay < 1.0:
            raise UserError("REINFORCE settings: datasets ≥ 1 and 0 ≤ baseline_decay < 1.")


class Reinforce:
    """The LTS update rule; holds the moving-average baseline between steps (`baseline` is checkpointed)."""

    def __init__(self, train_and_evaluate: TrainAndEvaluate, render: Render, config: ReinforceConfig):
        self.train_and_evaluate, self.render, self.config = train_and_evaluate, render, config
        self.baseline: float | None = None

    def hypergradient(self, psi: Psi, counts: dict[str, int], generator: torch.Generator) -> tuple[dict[str, Tensor], list[float]]:
        """h ≈ dL_val/dψ (a descent direction for ψ, as for the other estimators) and the K rewards."""
        rewards, log_probs = [], []
        for _ in range(self.config.datasets):
            train = draw_training_set(psi, counts, self.render, generator, tau=None)
            rewards.append(float(self.train_and_evaluate(train)))
            log_probs.append(sum(psi.objects[d.obj].log_prob(d.params.bins).sum() for d in train.draws))
        mean = sum(rewards) / len(rewards)
        b = mean if self.baseline is None else self.baseline
        surrogate = sum((r - b) * lp for r, lp in zip(rewards, log_probs)) / len(rewards)
        leaves = psi.trainable()
        grads = torch.autograd.grad(-surrogate, list(leaves.values()), allow_unused=True)
        decay = self.config.baseline_decay
        self.baseline = mean if self.baseline is None else decay * self.baseline + (1 - decay) * mean
        return {n: torch.zeros_like(t) if g is None else g for (n, t), g in zip(leaves.items(), grads)}, rewards
