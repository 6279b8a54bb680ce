"""Binned factors: a categorical over k equal bins of [low, high), the parameterisation that both the
target-domain scene sets and ψ use (paper §3.1: B_1 = [0, 360/k), B_2 = [360/k, 2·360/k), …).

Plain-JSON form of one object's distribution (`ObjectSpec`; a distribution file is `DistributionFile`):
    {"azimuth": {"low": 0, "high": 360, "probs": [...]},  "elevation": {...},  "radius": {...},
     "lighting": {"names": ["studio", ...], "weights": [...]}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import pydantic

from neuralsim.errors import UserError
from neuralsim.schema import Invalid, from_plain

FACTORS = ("azimuth", "elevation", "radius")
CIRCULAR = {"azimuth": True, "elevation": False, "radius": False}
DEFAULT_RANGES = {"azimuth": (0.0, 360.0), "elevation": (10.0, 50.0), "radius": (3.5, 5.5)}
PROB_TOL = 1e-4


LightingParameterisation = Literal["simplex", "logits"]


def check_probs(probs: list[float], field: str) -> np.ndarray:
    """Probabilities must be ≥ 0 and sum to 1 (within 1e-4), else `Invalid` names `field`; returns them renormalised
    exactly."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size == 0:
        raise Invalid(field, "at least one probability", probs)
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise Invalid(field, "finite probabilities ≥ 0", probs)
    if abs(p.sum() - 1.0) > PROB_TOL:
        raise Invalid(field, f"probabilities that sum to 1 (these sum to {p.sum():.6g})", probs)
    return p / p.sum()


def check_logits(logits: list[float] | None, probs: np.ndarray, against: str) -> None:
    """Logits stored beside probabilities must be one per probability, and their softmax must be those."""
    if logits is None:
        return
    a = np.asarray(logits, dtype=np.float64)
    if a.shape != probs.shape:
        raise Invalid("logits", f"{len(probs)} numbers, one per entry of {against}", logits)
    if np.max(np.abs(np.exp(a - a.max()) / np.exp(a - a.max()).sum() - probs)) > 1e-4:
        raise Invalid("logits", f"numbers whose softmax is {against} (they disagree: give one of them, or both "
                                "consistent)", logits)


# ----------------------------------------------------------------------------- the file form


@dataclass
class FactorSpec:
    """One factor in a distribution or ψ file: the probabilities of k equal bins of [low, high) (the factor's
    default range where left out) and, in a ψ file, the logits they came from."""

    probs: list[float]
    low: float | None = None
    high: float | None = None
    logits: list[float] | None = None

    def __post_init__(self):
        check_logits(self.logits, check_probs(self.probs, "probs"), "probs")


@dataclass
class LightingSpec:
    """The lighting weights in a distribution or ψ file; a ψ file adds how they are optimised, and its logits."""

    names: list[str]
    weights: list[float]
    parameterisation: LightingParameterisation = "simplex"
    logits: list[float] | None = None

    def __post_init__(self):
        if len(self.weights) != len(self.names):
            raise Invalid("weights", f"{len(self.names)} weights, one per name", self.weights)
        weights = check_probs(self.weights, "weights")
        if self.parameterisation == "logits":
            check_logits(self.logits, weights, "weights")


@dataclass
class ObjectSpec:
    """One object's distribution in a file; a factor left out is uniform over its default range in one bin."""

    azimuth: FactorSpec | None = None
    elevation: FactorSpec | None = None
    radius: FactorSpec | None = None
    lighting: LightingSpec | None = None

    def __post_init__(self):
        for name in FACTORS:
            spec: FactorSpec | None = getattr(self, name)
            if spec is None:
                continue
            spec.low = DEFAULT_RANGES[name][0] if spec.low is None else spec.low
            spec.high = DEFAULT_RANGES[name][1] if spec.high is None else spec.high
            if CIRCULAR[name] and not math.isclose(spec.high - spec.low, 360.0):
                raise Invalid((name, "high"), f"low + 360 = {spec.low + 360:g} (azimuth bins cover a full turn)",
                              spec.high)
            if not spec.high > spec.low:
                raise Invalid((name, "high"), f"a number above low ({spec.low:g})", spec.high)


@dataclass
class DistributionFile:
    """A distribution file, or a ψ file: `{"objects": {name: ObjectSpec}}`."""

    objects: Annotated[dict[str, ObjectSpec], pydantic.Field(min_length=1)]


@dataclass
class FactorBins:
    """k equal bins over [low, high) with probabilities; `circular` for angles (azimuth wraps at 360°)."""

    low: float
    high: float
    probs: np.ndarray
    circular: bool = False

    def __post_init__(self):
        self.probs = np.asarray(self.probs, dtype=np.float64)
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.high <= self.low:
            raise UserError(f"Bin range [{self.low}, {self.high}) is empty or not finite; high must exceed low.")

    @property
    def k(self) -> int:
        return len(self.probs)

    @property
    def width(self) -> float:
        return (self.high - self.low) / self.k

    @property
    def centres(self) -> np.ndarray:
        return self.low + (np.arange(self.k) + 0.5) * self.width

    def bin_of(self, value) -> np.ndarray:
        """Bin index of values (wrapped into the range for circular factors)."""
        v = np.asarray(value, dtype=np.float64)
        if self.circular:
            v = self.low + np.mod(v - self.low, self.high - self.low)
        return np.clip(np.floor((v - self.low) / self.width).astype(int), 0, self.k - 1)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw n values: a bin from `probs`, then uniform within the bin. Returns (values, bins)."""
        bins = rng.choice(self.k, size=n, p=self.probs)
        values = self.low + (bins + rng.random(n)) * self.width
        return values, bins

    def to_json(self) -> dict:
        return {"low": self.low, "high": self.high, "probs": self.probs.tolist()}

    @classmethod
    def from_spec(cls, name: str, spec: FactorSpec) -> FactorBins:
        return cls(spec.low, spec.high, check_probs(spec.probs, "probs"), CIRCULAR[name])

    @classmethod
    def uniform(cls, name: str, k: int = 1, low: float | None = None, high: float | None = None) -> FactorBins:
        lo, hi = DEFAULT_RANGES[name]
        return cls(lo if low is None else low, hi if high is None else high, np.full(k, 1.0 / k), CIRCULAR[name])


@dataclass
class LightingWeights:
    """Weights over named lighting conditions, a point on the simplex."""

    names: list[str]
    weights: np.ndarray

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw n condition indices with probabilities `weights` (target-domain scenes)."""
        return rng.choice(len(self.names), size=n, p=self.weights)

    def to_json(self) -> dict:
        return {"names": list(self.names), "weights": self.weights.tolist()}

    @classmethod
    def from_spec(cls, spec: LightingSpec) -> LightingWeights:
        return cls(list(spec.names), check_probs(spec.weights, "weights"))


@dataclass
class ObjectDistribution:
    """Render-parameter distribution of one object: binned azimuth, elevation, radius and lighting."""

    factors: dict[str, FactorBins]
    lighting: LightingWeights = field(default_factory=lambda: LightingWeights(["studio"], np.ones(1)))

    def to_json(self) -> dict:
        return {**{k: v.to_json() for k, v in self.factors.items()}, "lighting": self.lighting.to_json()}

    @classmethod
    def from_spec(cls, spec: ObjectSpec) -> ObjectDistribution:
        factors = {f: FactorBins.from_spec(f, getattr(spec, f)) if getattr(spec, f) else FactorBins.uniform(f)
                   for f in FACTORS}
        return cls(factors, LightingWeights.from_spec(spec.lighting) if spec.lighting else LightingWeights(
            ["studio"], np.ones(1)))

    @classmethod
    def from_json(cls, data: dict, what: str) -> ObjectDistribution:
        return cls.from_spec(from_plain(ObjectSpec, data, what))

    @classmethod
    def uniform(cls, azimuth_bins: int = 8, lighting: list[str] | None = None) -> ObjectDistribution:
        names = lighting or ["studio"]
        return cls({"azimuth": FactorBins.uniform("azimuth", azimuth_bins), "elevation": FactorBins.uniform("elevation"),
                    "radius": FactorBins.uniform("radius")}, LightingWeights(names, np.full(len(names), 1 / len(names))))
