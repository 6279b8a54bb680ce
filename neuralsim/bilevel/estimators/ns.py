"""NS: no optimisation. Each outer step draws from ψ₀ and trains the detector on it; ψ never moves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from neuralsim.bilevel.data import draw_training_set
from neuralsim.bilevel.estimators.base import StepInputs, StepOutcome


@dataclass
class NSConfig:
    """Train on data drawn from the initial ψ, never move it (the paper's NS baseline)."""

    method: Literal["ns"] = "ns"

    optimises_psi = False

    def step(self, inputs: StepInputs) -> StepOutcome:
        with inputs.clock("render"):
            train = draw_training_set(inputs.psi, inputs.counts, inputs.render, inputs.generator, None)
        with inputs.clock("train"):
            inputs.train(inputs.model, train)
        return StepOutcome(inputs.model, None, train, training_renders=len(train))
