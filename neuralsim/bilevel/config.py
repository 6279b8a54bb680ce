"""The settings of one `neuralsim optimize` run, each default written once: the values the project measured best
(docs/RESULTS.md). A config of `fields`, `val` and `test` alone runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from neuralsim.bilevel.estimators import LOGITS_ONLY, METHODS, MethodConfig, SecondOrderConfig
from neuralsim.bilevel.estimators.influence import InfluenceConfig
from neuralsim.bilevel.field_source import SourceConfig
from neuralsim.errors import UserError
from neuralsim.runtime import read_json
from neuralsim.sampling.bins import FACTORS
from neuralsim.sampling.optim import PsiOptimizerConfig
from neuralsim.schema import from_plain
from neuralsim.tasks.detector import DetectorConfig
from neuralsim.tasks.train import TrainConfig


@dataclass
class PretrainConfig:
    """The detector pre-trained from scratch on renders drawn from ψ₀ when no `detector_init` is given."""

    images_per_object: int = 100
    """Field renders per object drawn from ψ₀."""
    epochs: int = 12

    def __post_init__(self):
        if self.images_per_object < 1 or self.epochs < 1:
            raise UserError(f"pretrain needs images_per_object ≥ 1 and epochs ≥ 1, got {self.images_per_object} "
                            f"and {self.epochs}.")


@dataclass
class OptimizeConfig:
    """Everything one `neuralsim optimize` run needs; saved as the run's config.json."""

    fields: dict[str, str] = field(default_factory=dict)
    """Object (COCO category name) → fitted field folder."""
    val: str = ""
    """Validation COCO set (drives ψ). Its image size is the size of the training renders and of the detector."""
    test: str = ""
    """Test COCO set (reported, never used for ψ)."""
    method: MethodConfig = field(default_factory=InfluenceConfig)
    """ns, nso, autosim, influence or lts, with its own settings."""
    psi: str | None = None
    """Initial ψ file; None: uniform over `bins` and `lighting`."""
    bins: dict[str, int] = field(default_factory=lambda: {"azimuth": 8, "elevation": 1, "radius": 1})
    """Bins per factor when ψ starts uniform."""
    lighting: list[str] | None = None
    """Lighting conditions (field anchors) ψ mixes when it starts uniform; None: every condition the fields share."""
    factors: list[str] = field(default_factory=lambda: ["azimuth"])
    """Factors of ψ to optimise: azimuth, elevation, radius, lighting."""
    psi_objects: list[str] | None = None
    """Objects whose ψ is optimised; None: every object. The others keep their initial ψ and cost the estimator
    nothing."""
    steps: int = 20
    """Outer steps."""
    images_per_object: int = 50
    """Training images rendered per object per outer step."""
    source: SourceConfig = field(default_factory=SourceConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """The detector built for pre-training (its classes and image size come from the validation set)."""
    detector_init: str | None = None
    """A detector folder to start from; None: one pre-trained on ψ₀ in the run folder (`pretrain`)."""
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    shots: str | None = None
    """A COCO set of labelled target-domain images mixed into every outer step's detector training; they do not
    depend on ψ, so they scale its hypergradient by N/(N + S)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, trainable="heads", warmup_steps=10, lr=1e-4))
    """The detector training in each outer step (the paper: two epochs, backbone fixed). The learning rate is a
    tenth of pre-training's, which keeps what pre-training learned."""
    hypergradient: SecondOrderConfig = field(default_factory=SecondOrderConfig)
    psi_optimizer: PsiOptimizerConfig = field(default_factory=PsiOptimizerConfig)
    batch_size: int = 16
    """Images per batch in second-order computations and evaluation."""
    seed: int = 0
    """Every random number of the run (draws, backgrounds, detector, batches) derives from it."""
    device: str = "auto"

    @property
    def theta(self) -> str:
        """θ of the hypergradient: as configured, else the parameters the inner training trains."""
        return self.hypergradient.theta or self.train.trainable

    def validate(self) -> None:
        """The inputs are named and the settings agree (`check_settings`)."""
        missing = [k for k in ("fields", "val", "test") if not getattr(self, k)]
        if missing:
            raise UserError(f"The optimize config needs {', '.join(missing)}.")
        self.check_settings()

    def check_settings(self) -> None:
        """The settings agree with each other (the inputs aside)."""
        if self.steps < 1 or self.images_per_object < 1 or self.batch_size < 1:
            raise UserError("steps, images_per_object and batch_size must be at least 1.")
        unknown = [f for f in self.factors if f not in (*FACTORS, "lighting")]
        if unknown:
            raise UserError(f"Unknown factor(s) {unknown}; choose from {', '.join((*FACTORS, 'lighting'))}.")
        name = self.method.method
        if not self.method.optimises_psi:
            return
        if not self.factors:
            raise UserError(f"method {name} needs at least one factor of ψ to optimise (factors is empty).")
        if self.psi_objects is not None and not self.psi_objects:
            raise UserError(f"method {name} needs at least one object whose ψ to optimise (psi_objects is empty; "
                            "leave it out to optimise every object).")
        pathwise_lighting = getattr(self.method, "pathwise_lighting", True)
        if "lighting" in self.factors and (name in LOGITS_ONLY or not pathwise_lighting):
            raise UserError(f"method {name} cannot optimise the lighting weights: its estimate covers the bin logits "
                            "only (the weights are mixed, not drawn). Use nso or influence for lighting.")

    def optimised_factors(self) -> list[str]:
        return list(self.factors) if self.method.optimises_psi else []


def load_config(path: str | Path) -> OptimizeConfig:
    return from_plain(OptimizeConfig, read_json(path, "Optimize config"), f"Optimize config {path}")


__all__ = ["METHODS", "OptimizeConfig", "PretrainConfig", "load_config"]
