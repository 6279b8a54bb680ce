"""Binned factors: a categorical over k equal bins of [low, high), the parameterisation that both the
target-domain scene sets and ψ use (paper §3.1: B_1 = [0, 360/k), B_2 = [360/k, 2·360/k), …).

Plain-JSON form of one object's distribution:
    {"azimuth": {"low": 0, "high": 360, "probs": [...]},  "elevation": {...},  "radius": {...},
     "lighting": {"names": ["studio", ...], "weights": [...]}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from neuralsim.errors import UserError

FACTORS = ("azimuth", "elevation", "radius")
CIRCULAR = {"azimuth": True, "elevation": False, "radius": False}
DEFAULT_RANGES = {"azimuth": (0.0, 360.0), "elevation": (10.0, 50.0), "radius": (3.5, 5.5)}
PROB_TOL = 1e-4


def check_probs(probs, what: str) -> np.ndarray:
    """Probabilities must be finite, ≥ 0 and sum to 1 (within 1e-4); returns them renormalised exactly."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size == 0:
        raise UserError(f"{what}: the probability list is empty.")
    if not np.all(np.isfinite(p)):
        raise UserError(f"{what}: probabilities must be finite numbers, got {p.tolist()}.")
    if np.any(p < 0):
        raise UserError(f"{what}: probabilities must not be negative, got {p.tolist()}.")
    if abs(p.sum() - 1.0) > PROB_TOL:
        raise UserError(f"{what}: probabilities must sum to 1, they sum to {p.sum():.6g}.")
    return p / p.sum()


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
    def from_json(cls, data: dict, name: str, what: str) -> FactorBins:
        if not isinstance(data, dict) or "probs" not in data:
            raise UserError(f"{what}: factor '{name}' must be an object with 'low', 'high' and 'probs'.")
        low, high = data.get("low", DEFAULT_RANGES[name][0]), data.get("high", DEFAULT_RANGES[name][1])
        if CIRCULAR[name] and not math.isclose(high - low, 360.0):
            raise UserError(f"{what}: azimuth bins must cover a full turn (high - low = 360), got [{low}, {high}).")
        probs = check_probs(data["probs"], f"{what}: factor '{name}'")
        return cls(float(low), float(high), probs, CIRCULAR[name])

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
    def from_json(cls, data: dict, what: str) -> LightingWeights:
        if not isinstance(data, dict) or "names" not in data or "weights" not in data:
            raise UserError(f"{what}: 'lighting' must be an object with 'names' and 'weights'.")
        if len(data["names"]) != len(data["weights"]):
            raise UserError(f"{what}: lighting has {len(data['names'])} names but {len(data['weights'])} weights.")
        return cls(list(data["names"]), check_probs(data["weights"], f"{what}: lighting"))


@dataclass
class ObjectDistribution:
    """Render-parameter distribution of one object: binned azimuth, elevation, radius and lighting."""

    factors: dict[str, FactorBins]
    lighting: LightingWeights = field(default_factory=lambda: LightingWeights(["studio"], np.ones(1)))

    def to_json(self) -> dict:
        return {**{k: v.to_json() for k, v in self.factors.items()}, "lighting": self.lighting.to_json()}

    @classmethod
    def from_json(cls, data: dict, what: str) -> ObjectDistribution:
        if not isinstance(data, dict):
            raise UserError(f"{what}: expected an object with azimuth/elevation/radius/lighting entries.")
        unknown = set(data) - set(FACTORS) - {"lighting"}
        if unknown:
            raise UserError(f"{what}: unknown factor(s) {sorted(unknown)}; expected {list(FACTORS)} and 'lighting'.")
        factors = {f: FactorBins.from_json(data[f], f, what) if f in data else FactorBins.uniform(f) for f in FACTORS}
        lighting = LightingWeights.from_json(data["lighting"], what) if "lighting" in data else LightingWeights(
            ["studio"], np.ones(1))
        return cls(factors, lighting)

    @classmethod
    def uniform(cls, azimuth_bins: int = 8, lighting: list[str] | None = None) -> ObjectDistribution:
        names = lighting or ["studio"]
        return cls({"azimuth": FactorBins.uniform("azimuth", azimuth_bins), "elevation": FactorBins.uniform("elevation"),
                    "radius": FactorBins.uniform("radius")}, LightingWeights(names, np.full(len(names), 1 / len(names))))
