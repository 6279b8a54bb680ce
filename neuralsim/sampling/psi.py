"""ψ, the learnable distribution over render parameters: per object and factor a categorical over bins held
as logits, Gumbel-softmax relaxed draws with replayable noise (Tool 1), discrete draws, lighting weights.

A ψ file is plain JSON in the `bins.py` form (`DistributionFile`), one distribution per object under "objects"; each
factor may add its "logits" (kept exactly on save) and the lighting its "parameterisation":

    {"objects": {"pitcher_base": {"azimuth": {"low": 0, "high": 360, "probs": [...], "logits": [...]},
                                   "elevation": {...}, "radius": {...},
                                   "lighting": {"names": [...], "weights": [...], "parameterisation": "simplex"}}}}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from neuralsim.errors import UserError
from neuralsim.runtime import atomic_write_json, read_json
from neuralsim.sampling.bins import (
    FACTORS,
    DistributionFile,
    FactorBins,
    FactorSpec,
    LightingSpec,
    LightingWeights,
    ObjectDistribution,
    ObjectSpec,
)
from neuralsim.sampling.noise import DTYPE, PLACEMENT_DIMS, FactorNoise, ObjectNoise, RenderParams, sample_gumbel
from neuralsim.schema import from_plain

LOGIT_FLOOR = -30.0  # logit of a bin whose probability is 0 in a JSON file without logits (p ≈ 1e-13 · p_max)


# ----------------------------------------------------------------------------- one factor


@dataclass
class FactorPsi:
    """One factor's categorical over k equal bins of [low, high); p = softmax(logits). Angles in degrees."""

    low: float
    high: float
    logits: Tensor  # (k,) leaf tensor; requires_grad when the factor is optimised
    circular: bool = False

    @property
    def k(self) -> int:
        return self.logits.numel()

    @property
    def width(self) -> float:
        return (self.high - self.low) / self.k

    def centres(self) -> Tensor:
        """Bin centres c_i, (k,)."""
        return self.low + (torch.arange(self.k, dtype=self.logits.dtype) + 0.5) * self.width

    def probs(self) -> Tensor:
        return torch.softmax(self.logits, dim=0)

    def log_probs(self) -> Tensor:
        return torch.log_softmax(self.logits, dim=0)

    def draw_noise(self, n: int, generator: torch.Generator) -> FactorNoise:
        dtype = self.logits.dtype
        return FactorNoise(sample_gumbel((n, self.k), generator, dtype), torch.rand(n, generator=generator, dtype=dtype))

    def relaxed_weights(self, noise: FactorNoise, tau: float) -> Tensor:
        """Tool 1: y = softmax((log p + g)/τ), (n, k); differentiable in the logits."""
        self._check_dtype(noise)
        return torch.softmax((self.log_probs() + noise.gumbel) / tau, dim=-1)

    def relaxed(self, noise: FactorNoise, tau: float) -> Tensor:
        """Relaxed draw (n,): relaxed bin centre (circular mean for angles) plus the jitter (ε − ½)·w."""
        y = self.relaxed_weights(noise, tau)  # (n, k)
        c = self.centres()
        if self.circular:
            c_rad = torch.deg2rad(c)
            centre = torch.rad2deg(torch.atan2(y @ torch.sin(c_rad), y @ torch.cos(c_rad)))
        else:
            centre = y @ c
        return self._wrap(centre + (noise.jitter - 0.5) * self.width)

    def hard_bins(self, noise: FactorNoise) -> Tensor:
        """The bin each draw falls in, argmax(log p + g) (n,): an exact categorical draw (Gumbel-max)."""
        self._check_dtype(noise)
        return torch.argmax(self.log_probs().detach() + noise.gumbel, dim=-1)

    def value_in_bin(self, bins: Tensor, jitter: Tensor) -> Tensor:
        """low + (bin + ε)·w, (n,): a uniform point of each bin, no gradient to the logits."""
        return self.low + (bins.to(jitter.dtype) + jitter) * self.width

    def _wrap(self, value: Tensor) -> Tensor:
        if not self.circular:
            return value
        return self.low + torch.remainder(value - self.low, self.high - self.low)

    def _check_dtype(self, noise: FactorNoise) -> None:
        if noise.gumbel.dtype != self.logits.dtype:
            raise ValueError(f"noise is {noise.gumbel.dtype} but ψ is {self.logits.dtype}: replay must use one dtype")

    def to_json(self) -> dict:
        return {**self.to_bins().to_json(), "logits": self.logits.detach().cpu().tolist()}

    def to_bins(self) -> FactorBins:
        return FactorBins(self.low, self.high, self.probs().detach().cpu().numpy(), self.circular)

    @classmethod
    def from_bins(cls, bins: FactorBins, logits: Iterable[float] | None = None) -> FactorPsi:
        if logits is None:
            with np.errstate(divide="ignore"):
                a = np.log(bins.probs)
            a = np.maximum(a - a.max(), LOGIT_FLOOR)
        else:
            a = np.asarray(list(logits), dtype=np.float64)
        return cls(bins.low, bins.high, torch.tensor(a, dtype=DTYPE), bins.circular)

    @classmethod
    def from_spec(cls, name: str, spec: FactorSpec) -> FactorPsi:
        return cls.from_bins(FactorBins.from_spec(name, spec), spec.logits)


# ----------------------------------------------------------------------------- lighting


def project_simplex(w: Tensor) -> Tensor:
    """Euclidean projection onto {w ≥ 0, Σ w = 1} (sort-based; Held et al. / Duchi et al. 2008)."""
    u, _ = torch.sort(w, descending=True)
    css = torch.cumsum(u, dim=0) - 1.0
    index = torch.arange(1, w.numel() + 1, dtype=w.dtype)
    rho = int(torch.nonzero(u - css / index > 0).max())  # last index where the condition holds
    return torch.clamp(w - css[rho] / (rho + 1), min=0.0)


@dataclass
class LightingPsi:
    """Weights w on the simplex over named lighting conditions; ℓ = Σ w_k ℓ_k (paper §3.2).

    `simplex`: `param` is w itself, kept on the simplex by projection after each step;
    `logits`: `param` holds logits and w = softmax(param).
    """

    names: list[str]
    param: Tensor  # (L,) leaf tensor
    parameterisation: str = "simplex"

    def weights(self) -> Tensor:
        return torch.softmax(self.param, dim=0) if self.parameterisation == "logits" else self.param

    def project(self) -> None:
        if self.parameterisation == "simplex":
            with torch.no_grad():
                self.param.copy_(project_simplex(self.param))

    def to_json(self) -> dict:
        data = {**LightingWeights(list(self.names), self.weights().detach().cpu().numpy()).to_json(),
                "parameterisation": self.parameterisation}
        if self.parameterisation == "logits":
            data["logits"] = self.param.detach().cpu().tolist()
        return data

    @classmethod
    def from_weights(cls, lighting: LightingWeights, parameterisation: str = "simplex") -> LightingPsi:
        w = np.asarray(lighting.weights, dtype=np.float64)
        if parameterisation == "logits":
            with np.errstate(divide="ignore"):
                w = np.maximum(np.log(w) - np.log(w.max()), LOGIT_FLOOR)
        return cls(list(lighting.names), torch.tensor(w, dtype=DTYPE), parameterisation)

    @classmethod
    def from_spec(cls, spec: LightingSpec) -> LightingPsi:
        psi = cls.from_weights(LightingWeights.from_spec(spec), spec.parameterisation)
        raw = np.asarray(spec.weights, dtype=np.float64)
        if spec.parameterisation == "simplex" and abs(raw.sum() - 1.0) < 1e-12:
            psi.param = torch.tensor(raw, dtype=DTYPE)  # as written: a resumed run continues from the same bits
        if spec.parameterisation == "logits" and spec.logits is not None:
            psi.param = torch.tensor(spec.logits, dtype=DTYPE)
        return psi


# ----------------------------------------------------------------------------- one object, all objects


@dataclass
class ObjectPsi:
    """ψ of one object: binned azimuth, elevation and radius, and lighting weights."""

    factors: dict[str, FactorPsi]
    lighting: LightingPsi

    def draw_noise(self, n: int, generator: torch.Generator) -> ObjectNoise:
        factors = {f: self.factors[f].draw_noise(n, generator) for f in FACTORS}
        return ObjectNoise(factors, torch.rand((n, PLACEMENT_DIMS), generator=generator, dtype=DTYPE))

    def relaxed(self, noise: ObjectNoise, tau: float) -> RenderParams:
        """Tool 1 draws, differentiable in ψ; `bins` holds the argmax bin of each relaxed draw."""
        values = {f: self.factors[f].relaxed(noise.factors[f], tau) for f in FACTORS}
        bins = {f: self.factors[f].hard_bins(noise.factors[f]) for f in FACTORS}
        return self._params(values, bins, noise)

    def discrete(self, noise: ObjectNoise) -> RenderParams:
        """Exact draws: bin ~ Categorical(p) by Gumbel-max, value uniform in the bin; no gradient to the logits."""
        bins = {f: self.factors[f].hard_bins(noise.factors[f]) for f in FACTORS}
        values = {f: self.factors[f].value_in_bin(bins[f], noise.factors[f].jitter) for f in FACTORS}
        return self._params(values, bins, noise)

    def log_prob(self, bins: dict[str, Tensor]) -> Tensor:
        """log p(V) of discrete draws, (n,): the sum over factors of the bin log-probabilities (the within-bin
        density 1/w does not depend on ψ)."""
        return sum(self.factors[f].log_probs()[bins[f]] for f in FACTORS)

    def _params(self, values: dict[str, Tensor], bins: dict[str, Tensor], noise: ObjectNoise) -> RenderParams:
        lighting = self.lighting.weights().expand(len(noise), -1)  # (n, L)
        return RenderParams(values["azimuth"], values["elevation"], values["radius"], lighting, bins, noise.placement)

    def parameters(self) -> dict[str, Tensor]:
        return {**{f: self.factors[f].logits for f in FACTORS}, "lighting": self.lighting.param}

    def to_json(self) -> dict:
        return {**{f: self.factors[f].to_json() for f in FACTORS}, "lighting": self.lighting.to_json()}

    @classmethod
    def from_distribution(cls, dist: ObjectDistribution, parameterisation: str = "simplex") -> ObjectPsi:
        return cls({f: FactorPsi.from_bins(dist.factors[f]) for f in FACTORS},
                   LightingPsi.from_weights(dist.lighting, parameterisation))

    @classmethod
    def from_spec(cls, spec: ObjectSpec) -> ObjectPsi:
        dist = ObjectDistribution.from_spec(spec)
        factors = {f: FactorPsi.from_spec(f, getattr(spec, f)) if getattr(spec, f) else FactorPsi.from_bins(dist.factors[f])
                   for f in FACTORS}
        return cls(factors, LightingPsi.from_spec(spec.lighting) if spec.lighting else LightingPsi.from_weights(dist.lighting))


@dataclass
class Psi:
    """ψ of every object. `parameters()` names the leaves "object/factor" and "object/lighting"."""

    objects: dict[str, ObjectPsi]

    def parameters(self) -> dict[str, Tensor]:
        return {f"{o}/{name}": t for o, psi in self.objects.items() for name, t in psi.parameters().items()}

    def trainable(self) -> dict[str, Tensor]:
        return {name: t for name, t in self.parameters().items() if t.requires_grad}

    def set_trainable(self, factors: Iterable[str], objects: Iterable[str] | None = None) -> Psi:
        """Optimise only these factors (of "azimuth", "elevation", "radius", "lighting"), for these objects (None:
        every object); every other leaf keeps its value."""
        factors = set(factors)
        unknown = factors - set(FACTORS) - {"lighting"}
        if unknown:
            raise UserError(f"Unknown ψ factor(s) {sorted(unknown)}; choose from {[*FACTORS, 'lighting']}.")
        objects = set(self.objects if objects is None else objects)
        unknown = sorted(objects - set(self.objects))
        if unknown:
            raise UserError(f"ψ has no distribution for object(s) {unknown} to optimise; it has {sorted(self.objects)}.")
        for name, t in self.parameters().items():
            obj, factor = name.rsplit("/", 1)
            t.requires_grad_(factor in factors and obj in objects)
        return self

    def lighting_names(self) -> list[str]:
        """The lighting conditions every object mixes, in their order; one list for all objects, since renders place
        each object's weights onto one shared list of anchors."""
        names = {tuple(o.lighting.names) for o in self.objects.values()}
        if len(names) != 1:
            raise UserError("Every object of ψ must mix the same lighting conditions in the same order; found "
                            + " and ".join(str(list(n)) for n in sorted(names)) + ".")
        return list(names.pop())

    def project(self) -> None:
        """Put every simplex-parameterised lighting back on the simplex (after an optimiser step)."""
        for psi in self.objects.values():
            psi.lighting.project()

    def probabilities(self) -> dict[str, dict[str, list[float]]]:
        """Plain per-object, per-factor probabilities (for logging)."""
        return {o: {**{f: psi.factors[f].probs().detach().tolist() for f in FACTORS},
                    "lighting": psi.lighting.weights().detach().tolist()} for o, psi in self.objects.items()}

    def to_json(self) -> dict:
        return {"objects": {o: psi.to_json() for o, psi in self.objects.items()}}

    @classmethod
    def from_json(cls, data: dict, what: str = "ψ") -> Psi:
        return cls({o: ObjectPsi.from_spec(s) for o, s in from_plain(DistributionFile, data, what).objects.items()})

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> Psi:
        return cls.from_json(read_json(path, "ψ file"), f"ψ file {path}")
