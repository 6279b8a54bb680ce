"""LTS (Ruiz et al. 2019): REINFORCE on the validation reward. K datasets drawn from ψ, a copy of the detector
trained on each and scored; h = −(1/K) Σ_k (R_k − b) ∇ψ log p(dataset_k), b a moving average of the rewards."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from neuralsim.bilevel.data import draw_training_set
from neuralsim.bilevel.estimators.base import StepInputs, StepOutcome, grads_of
from neuralsim.errors import UserError


@dataclass
class LTSConfig:
    """Learning to Simulate: K detector trainings per ψ step, the rewards −L_val. It covers the bin logits only."""

    method: Literal["lts"] = "lts"
    datasets: int = 4
    """K datasets (detector trainings) per ψ step."""
    baseline_decay: float = 0.9
    """b ← decay·b + (1 − decay)·mean_k R_k."""

    optimises_psi = True

    def __post_init__(self):
        if self.datasets < 1 or not 0.0 <= self.baseline_decay < 1.0:
            raise UserError(f"lts needs datasets ≥ 1 and 0 ≤ baseline_decay < 1, got {self.datasets} and "
                            f"{self.baseline_decay}.")

    def step(self, inputs: StepInputs) -> StepOutcome:
        """K copies of the current detector trained on sets drawn from ψ_t; the first goes on as the run's."""
        models, rewards, log_probs = [], [], []
        for _ in range(self.datasets):
            with inputs.clock("render"):
                train = draw_training_set(inputs.psi, inputs.counts, inputs.render, inputs.generator, tau=None)
            model = copy.deepcopy(inputs.model)
            with inputs.clock("train"):
                inputs.train(model, train)
            with inputs.clock("evaluate"):
                rewards.append(-inputs.val_loss(model))
            models.append((model, train))
            log_probs.append(sum(inputs.psi.objects[d.obj].log_prob(d.params.bins).sum() for d in train.draws))
        grads, baseline = reinforce(inputs.psi.trainable(), rewards, log_probs, inputs.state.get("baseline"),
                                    self.baseline_decay)
        model, train = models[0]
        return StepOutcome(model, grads, train, rewards=rewards, detector_trainings=self.datasets,
                           training_renders=self.datasets * len(train), state={"baseline": baseline})


def reinforce(leaves: dict[str, Tensor], rewards: list[float], log_probs: list[Tensor], baseline: float | None,
              decay: float) -> tuple[dict[str, Tensor], float]:
    """h ≈ dL_val/dψ (a descent direction, as the other estimators') from K rewards and the log-probabilities of
    their datasets, and the baseline after this step (the first step's is the rewards' mean)."""
    mean = sum(rewards) / len(rewards)
    b = mean if baseline is None else baseline
    surrogate = sum((r - b) * lp for r, lp in zip(rewards, log_probs)) / len(rewards)
    new_baseline = mean if baseline is None else decay * baseline + (1 - decay) * mean
    return grads_of(-surrogate if torch.is_tensor(surrogate) else None, leaves), new_baseline
