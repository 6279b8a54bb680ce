"""The controlled train/test gaps of the paper's §4.1 (Fig. 4 a–c) on the built-in objects.

A gap fixes, for two "biased" objects, one factor of the target domain to a single bin (pose: azimuth
bin 1 of 8; zoom: the farthest radius bin; illumination: one lighting condition); the other objects
are uniform. ψ then starts "same" (the target bin dominant), "uniform", or "different" (another bin
dominant). Bin indices in code are 0-based; the paper's "bin 1" is index 0. `ycb21` is the paper's large-scale
run (Table 1): the pose gap's setting with all 21 objects, every one of them biased.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from neuralsim.assets.catalog import PAPER_SIX, builtin_names
from neuralsim.assets.renderer import check_lighting
from neuralsim.errors import UserError
from neuralsim.sampling.bins import FactorBins, LightingWeights, ObjectDistribution

INITS = ("same", "uniform", "different")


@dataclass(frozen=True)
class Gap:
    name: str
    factor: str  # "azimuth" | "radius" | "lighting"
    k: int  # bins (or lighting conditions)
    low: float
    high: float
    target_bin: int
    different_bin: int
    objects: tuple[str, ...] = tuple(PAPER_SIX)
    biased: tuple[str, ...] = ("019_pitcher_base", "035_power_drill")
    lighting: tuple[str, ...] = ("studio",)
    dominant_p: float = 0.8
    base_ranges: dict = field(default_factory=lambda: {"azimuth": (0.0, 360.0), "elevation": (10.0, 50.0),
                                                        "radius": (3.5, 5.5)})


GAPS: dict[str, Gap] = {
    "pose": Gap("pose", "azimuth", 8, 0.0, 360.0, target_bin=0, different_bin=4),
    "zoom": Gap("zoom", "radius", 4, 3.5, 7.5, target_bin=3, different_bin=0),
    "illumination": Gap("illumination", "lighting", 4, 0.0, 4.0, target_bin=3, different_bin=0,
                        lighting=("studio", "warm_left", "cool_right", "dim_top")),
    "ycb21": Gap("ycb21", "azimuth", 8, 0.0, 360.0, target_bin=0, different_bin=4, objects=tuple(builtin_names()),
                 biased=tuple(builtin_names())),
}


def bench_gap(name: str, objects, biased, target_bin: int | str | None = None,
              different_bin: int | str | None = None, lighting=None) -> Gap:
    """The gap `name` with a benchmark's own objects and biased objects, and optionally its own target and
    "different" bins (indices, or on the illumination gap lighting names; None: the gap's own) and its own lighting
    conditions (None: the gap's; on the illumination gap they are its bins, elsewhere drawn uniformly)."""
    gap = GAPS[name]
    if lighting is not None:
        names = tuple(check_lighting(list(lighting)))
        if len(set(names)) != len(names):
            raise UserError(f"The bench's lighting conditions {list(names)} name one condition twice.")
        if gap.factor == "lighting":
            if len(names) < 2:
                raise UserError(f"The {name} gap needs at least two lighting conditions to choose between, got {list(names)}.")
            gap = dataclasses.replace(gap, k=len(names), high=float(len(names)))
        gap = dataclasses.replace(gap, lighting=names)
    target, different = _bin_index(gap, "target_bin", target_bin), _bin_index(gap, "different_bin", different_bin)
    if target == different:
        raise UserError(f"target_bin and different_bin are both bin {target} of the {name} gap: the \"different\" "
                        "start would be the \"same\" one.")
    return dataclasses.replace(gap, objects=tuple(objects), biased=tuple(biased), target_bin=target,
                               different_bin=different)


def _bin_index(gap: Gap, key: str, value: int | str | None) -> int:
    if value is None:
        if gap.factor != "lighting":
            return getattr(gap, key)
        own = GAPS[gap.name]  # the gap's own condition, found by name among the bench's conditions
        value = own.lighting[getattr(own, key)]
        if value not in gap.lighting:
            raise UserError(f"The bench's lighting conditions {list(gap.lighting)} leave out {value!r}, the "
                            f"{gap.name} gap's own {key}; name a {key} among them.")
    if isinstance(value, str) and gap.factor == "lighting":
        if value not in gap.lighting:
            raise UserError(f"{key} {value!r} is not a lighting condition; choose from {', '.join(gap.lighting)}.")
        return gap.lighting.index(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < gap.k:
        raise UserError(f"{key} must be a bin index from 0 to {gap.k - 1} for the {gap.name} gap, got {value!r}.")
    return value


def _one_hot(k: int, index: int) -> np.ndarray:
    p = np.zeros(k)
    p[index] = 1.0
    return p


def _dominant(k: int, index: int, p: float) -> np.ndarray:
    probs = np.full(k, (1.0 - p) / max(k - 1, 1))
    probs[index] = p
    return probs


def _distribution(gap: Gap, probs: np.ndarray) -> ObjectDistribution:
    """The gap's factor with `probs`, every other factor uniform over one bin of its base range."""
    factors = {f: FactorBins(lo, hi, np.ones(1), circular=f == "azimuth") for f, (lo, hi) in gap.base_ranges.items()}
    lighting = LightingWeights(list(gap.lighting), np.full(len(gap.lighting), 1.0 / len(gap.lighting)))
    if gap.factor == "lighting":
        lighting = LightingWeights(list(gap.lighting), probs)
    else:
        factors[gap.factor] = FactorBins(gap.low, gap.high, probs, circular=gap.factor == "azimuth")
    return ObjectDistribution(factors, lighting)


def target_distributions(gap: Gap) -> dict[str, ObjectDistribution]:
    """The target domain (validation and test): biased objects from the target bin only, others uniform."""
    uniform = np.full(gap.k, 1.0 / gap.k)
    return {o: _distribution(gap, _one_hot(gap.k, gap.target_bin) if o in gap.biased else uniform) for o in gap.objects}


def initial_distributions(gap: Gap, init: str) -> dict[str, ObjectDistribution]:
    """ψ₀ for every object: biased objects start `same`/`uniform`/`different`; the others uniform."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}")
    uniform = np.full(gap.k, 1.0 / gap.k)
    start = {"same": _dominant(gap.k, gap.target_bin, gap.dominant_p), "uniform": uniform,
             "different": _dominant(gap.k, gap.different_bin, gap.dominant_p)}[init]
    return {o: _distribution(gap, start if o in gap.biased else uniform) for o in gap.objects}


def target_probs(gap: Gap, obj: str) -> np.ndarray:
    dist = target_distributions(gap)[obj]
    return dist.lighting.weights if gap.factor == "lighting" else dist.factors[gap.factor].probs


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance ½ Σ |p − q| between two distributions over the same bins."""
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())
