"""What one outer step reports: a typed record, one line of metrics.jsonl and the TensorBoard scalars."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class StepRecord:
    """One outer step t. Losses are means over images; AP in [0, 1] (None where the test set has no object)."""

    method: str
    val_loss: float
    val_loss_per_class: dict[str, float | None]
    test_loss: float
    test_loss_per_class: dict[str, float | None]
    test_ap: float | None
    test_ap50: float | None
    per_class: dict[str, dict[str, float | None]]
    """Class name → {"ap", "ap50"} on the test set."""
    psi: dict[str, Any]
    """ψ_t, which drew this step's data (probabilities per object and factor)."""
    psi_after: dict[str, Any]
    """ψ_{t+1}, after this step's ψ update."""
    hypergradient: dict[str, list[float]] | None
    """h per ψ leaf ("object/factor") before the ψ optimiser; None under ns."""
    hypergradient_norm: float | None
    cg_residual: float | None
    """‖(H + λI)v − g‖/‖g‖ of the implicit methods' v."""
    cg_negative_curvature: bool | None
    lts_rewards: list[float] | None
    seconds: dict[str, float]
    """Wall seconds per phase and the step's total."""
    peak_memory_mb: float
    peak_memory_mb_by_phase: dict[str, float]
    detector_trainings: int
    images_rendered: int
    renders: dict[str, int]
    """Images rendered this step: the training set(s) and what the estimator rendered beyond them."""

    @classmethod
    def from_json(cls, line: dict) -> StepRecord:
        return cls(**{f.name: line[f.name] for f in dataclasses.fields(cls)})


def read_records(run: str | Path) -> list[tuple[int, StepRecord]]:
    """(step, record) for every line of a run folder's metrics.jsonl."""
    path = Path(run) / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return [(line["step"], StepRecord.from_json(line)) for line in lines]
