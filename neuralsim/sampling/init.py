"""Initial ψ: uniform over given bins and lighting conditions, or with one bin of some factors dominant."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from neuralsim.errors import UserError
from neuralsim.runtime import to_plain
from neuralsim.sampling.bins import DEFAULT_RANGES, FACTORS, LightingParameterisation, ObjectSpec
from neuralsim.sampling.noise import DTYPE
from neuralsim.sampling.psi import ObjectPsi, Psi
from neuralsim.schema import from_plain


@dataclass
class PsiInit:
    """How to initialise ψ: bins per factor, ranges, and `uniform` or one bin `dominant` with mass `p`."""

    objects: list[str]
    bins: dict[str, int] = field(default_factory=lambda: {"azimuth": 8, "elevation": 1, "radius": 1})
    ranges: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_RANGES))
    lighting: list[str] = field(default_factory=lambda: ["studio"])
    lighting_parameterisation: LightingParameterisation = "simplex"
    kind: str = "uniform"  # "uniform" | "dominant"
    dominant: dict[str, dict[str, int]] = field(default_factory=dict)  # object → factor → dominant bin (0-based)
    p: float = 0.8  # mass of the dominant bin; the rest is spread evenly


def dominant_probs(k: int, index: int, p: float) -> np.ndarray:
    """p on bin `index`, (1 − p)/(k − 1) on each other bin."""
    if not 0 <= index < k:
        raise UserError(f"Dominant bin {index} is outside the {k} bins (0-based).")
    if not 0.0 < p <= 1.0 or (k == 1 and p != 1.0):
        raise UserError(f"The dominant bin's probability must lie in (0, 1], got {p}.")
    probs = np.full(k, (1.0 - p) / max(k - 1, 1))
    probs[index] = p
    return probs


def init_psi(config: PsiInit) -> Psi:
    """ψ for every object in `config.objects`: uniform, or with the configured bins dominant."""
    if config.kind not in ("uniform", "dominant"):
        raise UserError(f"ψ initialisation must be 'uniform' or 'dominant', not {config.kind!r}.")
    objects = {}
    for o in config.objects:
        factors = {}
        for f in FACTORS:
            k = config.bins.get(f, 1)
            if k < 1:
                raise UserError(f"ψ initialisation: factor '{f}' needs at least one bin, got {k}.")
            low, high = config.ranges.get(f, DEFAULT_RANGES[f])
            index = config.dominant.get(o, {}).get(f) if config.kind == "dominant" else None
            probs = np.full(k, 1.0 / k) if index is None else dominant_probs(k, index, config.p)
            factors[f] = {"low": low, "high": high, "probs": probs}
        n = len(config.lighting)
        lighting = {"names": config.lighting, "weights": np.full(n, 1.0 / n), "parameterisation":
                    config.lighting_parameterisation}
        objects[o] = ObjectPsi.from_spec(from_plain(ObjectSpec, to_plain({**factors, "lighting": lighting}),
                                                    "ψ initialisation"))
    return Psi(objects)


def circular_distance_deg(a: Tensor | float, b: Tensor | float) -> Tensor:
    """Shortest angular distance in degrees, in [0, 180]."""
    d = torch.remainder(torch.as_tensor(a, dtype=DTYPE) - torch.as_tensor(b, dtype=DTYPE), 360.0)
    return torch.minimum(d, 360.0 - d)

