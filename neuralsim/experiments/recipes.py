"""The benchmark's settings: the grid (ψ initialisations × methods × seeds), the asset preparation, the retraining,
and one nested optimize config that every run of the grid shares. The paper's gap recipes and the demo are preset
instances."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from neuralsim.assets.catalog import PAPER_SIX
from neuralsim.bilevel.config import OptimizeConfig, PretrainConfig
from neuralsim.bilevel.estimators import LOGITS_ONLY, MethodConfig, method_config
from neuralsim.bilevel.estimators.base import SecondOrderConfig
from neuralsim.bilevel.inverse_hvp import InverseHVPConfig
from neuralsim.errors import UserError
from neuralsim.experiments.gaps import GAPS, INITS, Gap, bench_gap
from neuralsim.runtime import read_json
from neuralsim.sampling.optim import PsiOptimizerConfig
from neuralsim.schema import from_plain
from neuralsim.tasks.detector import DetectorConfig


@dataclass
class BenchConfig:
    """One gap experiment: assets, target sets, the pre-trained detector and the grid of runs."""

    gap: str = "pose"
    """pose, zoom, illumination or ycb21."""
    objects: list[str] = field(default_factory=lambda: list(PAPER_SIX))
    """Built-in object names (`neuralsim objects list`); class c is the c-th."""
    biased: list[str] = field(default_factory=lambda: ["019_pitcher_base", "035_power_drill"])
    """The objects whose test views the gap shifts; the others are tested uniformly."""
    target_bin: int | str | None = None
    """The bin the biased objects are tested from (0-based), instead of the gap's own; on the illumination gap also a
    lighting condition's name. None: the gap's (pose: azimuth bin 0, zoom: the farthest radius bin, illumination:
    dim_top)."""
    different_bin: int | str | None = None
    """The bin that ψ₀ = "different" puts its mass on, as `target_bin`; None: the gap's."""
    lighting: list[str] | None = None
    """The lighting conditions captured, fitted into the fields and drawn (None: the gap's own). On the illumination
    gap they are ψ's bins."""
    size: int = 64
    """Image size of captures, target sets and training images (pixels)."""
    capture_views: int = 100
    """Posed views path-traced per object for fitting its field."""
    fit_steps: int = 1500
    """Optimiser steps of each field fit."""
    fit_rays: int = 4096
    """Rays per fitting step."""
    val_per_object: int = 20
    """Labelled validation images per object (they drive ψ)."""
    test_per_object: int = 50
    """Labelled test images per object (reported only)."""
    shots_per_object: int = 0
    """Labelled target-domain images per object mixed into every outer step's detector training (the paper's
    combined setting, Table 2). 0: none."""
    target_spp: int = 32
    """Path-tracing samples per pixel of the target sets."""
    methods: list[MethodConfig] = field(default_factory=lambda: [method_config(m) for m in ("ns", "nso", "influence")])
    """The methods of the grid, each with its own settings (in a file, a name stands for its defaults)."""
    inits: list[str] = field(default_factory=lambda: ["different"])
    """ψ initialisations: same, uniform, different."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """One run per seed of every (initialisation, method)."""
    psi_objects: Literal["all", "biased"] = "all"
    """Objects whose ψ the methods optimise: all, or the biased ones (the others keep ψ₀, their test distribution)."""
    retrain_per_object: int = 0
    """After each run, a detector is trained from scratch on this many field renders per object drawn from the run's
    final ψ, and one on ψ₀ with the same random numbers (only ψ differs), both scored on the test set. 0: none."""
    retrain_epochs: int = 30
    """Epochs of each retraining from scratch."""
    optimize: OptimizeConfig = field(default_factory=OptimizeConfig)
    """Every run's optimize settings; its inputs, method, ψ₀, factors and seed are the grid's. `optimize.pretrain`
    makes the cached detector every run starts from."""
    cache: str | None = None
    """Folder of the cached captures, fields, target sets and detectors; None: $NEURALSIM_CACHE or ~/.cache/neuralsim."""
    device: str = "cpu"
    """cpu or cuda."""

    def validate(self) -> None:
        if self.gap not in GAPS:
            raise UserError(f"Unknown gap {self.gap!r}; choose from {', '.join(GAPS)}.")
        bad = [i for i in self.inits if i not in INITS]
        if bad:
            raise UserError(f"ψ initialisations must be among {', '.join(INITS)}, got {self.inits}.")
        if not set(self.biased) <= set(self.objects):
            raise UserError(f"Biased objects {self.biased} must be among the objects {self.objects}.")
        names = [m.method for m in self.methods]
        if not names or len(set(names)) != len(names):
            raise UserError(f"The bench needs each method at most once and at least one, got {names}.")
        if GAPS[self.gap].factor == "lighting" and set(LOGITS_ONLY) & set(names):
            raise UserError(f"The {self.gap} gap optimises lighting weights, which {' and '.join(LOGITS_ONLY)} cannot "
                            "(their estimates cover bin logits only); use ns, nso or influence.")
        for method in self.methods:
            dataclasses.replace(self.optimize, method=method, factors=[GAPS[self.gap].factor]).check_settings()
        counts = {"size": self.size, "capture_views": self.capture_views, "fit_steps": self.fit_steps,
                  "fit_rays": self.fit_rays, "val_per_object": self.val_per_object,
                  "test_per_object": self.test_per_object, "target_spp": self.target_spp, "seeds": len(self.seeds),
                  "retrain_epochs": self.retrain_epochs}
        bad = sorted(k for k, v in counts.items() if v < 1)
        if bad:
            raise UserError(f"Bench settings {bad} must be at least 1 (or non-empty lists).")
        if min(self.seeds) < 0 or self.shots_per_object < 0 or self.retrain_per_object < 0:
            raise UserError("seeds, shots_per_object and retrain_per_object must be ≥ 0.")
        _ = self.gap_spec  # a UserError on a bad target_bin or different_bin

    @property
    def gap_spec(self) -> Gap:
        return bench_gap(self.gap, self.objects, self.biased, self.target_bin, self.different_bin, self.lighting)

    def with_methods(self, names: list[str]) -> BenchConfig:
        """This bench with the grid's methods `names`: the settings this bench gives a method are kept."""
        given = {m.method: m for m in self.methods}
        return dataclasses.replace(self, methods=[given.get(n) or method_config(n) for n in names])


def recipe(gap: str) -> BenchConfig:
    """The paper's full-size recipe of a gap (six objects; ycb21: all 21, every one biased)."""
    if gap not in GAPS:
        raise UserError(f"Unknown gap {gap!r}; choose from {', '.join(GAPS)}, or give a bench config file.")
    spec = GAPS[gap]
    return BenchConfig(gap=gap, objects=list(spec.objects), biased=list(spec.biased))


def demo(gap: str = "zoom") -> BenchConfig:
    """The demo's reduced gap experiment (4 objects, NS against influence, 12 steps, a 128-channel detector):
    ≤ 15 minutes on a 2-core CPU from a fresh machine. On the illumination gap it is the dark-room setting (the
    recipe's dim_top leaves nothing to recover at 64 px)."""
    own = {"illumination": dict(lighting=["studio", "warm_left", "cool_right", "dim_top", "low_light"],
                                target_bin="low_light", different_bin="studio")}
    optimize = OptimizeConfig(
        steps=12, images_per_object=20, detector=DetectorConfig(fpn_channels=128),
        pretrain=PretrainConfig(images_per_object=80, epochs=30),
        hypergradient=SecondOrderConfig(hvp_images=20, inverse_hvp=InverseHVPConfig(damping=1.0, iterations=5)),
        psi_optimizer=PsiOptimizerConfig(lr=1.0))
    return BenchConfig(gap=gap, objects=["002_master_chef_can", "019_pitcher_base", "025_mug", "035_power_drill"],
                       capture_views=60, fit_steps=250, fit_rays=2048, val_per_object=10, test_per_object=25,
                       target_spp=16, methods=[method_config("ns"), method_config("influence")], seeds=[0],
                       optimize=optimize, **own.get(gap, {}))


def bench_from_plain(data, what: str) -> BenchConfig:
    """A `BenchConfig` from JSON data, in which a method's name stands for that method with its defaults."""
    if isinstance(data, dict) and isinstance(data.get("methods"), list):
        data = data | {"methods": [{"method": m} if isinstance(m, str) else m for m in data["methods"]]}
    return from_plain(BenchConfig, data, what)


def load_bench_config(gap_or_path: str) -> BenchConfig:
    """A gap's recipe by name, or a `BenchConfig` from a JSON file; validated."""
    path = Path(gap_or_path)
    if gap_or_path.endswith(".json") or path.is_file():
        bench = bench_from_plain(read_json(path, "Bench config"), f"Bench config {path}")
    else:
        bench = recipe(gap_or_path)
    bench.validate()
    return bench
