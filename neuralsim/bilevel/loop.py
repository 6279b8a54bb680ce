"""The bilevel loop (DESIGN.md §2): draw D_train(ψ) from the fields, train the detector, estimate
dL_val/dψ (nso / autosim / influence / lts, or none for ns), step ψ, score the test set, checkpoint.

Every outer step t uses its own generator seeded from (seed, t), and the checkpoint after step t holds
ψ, the ψ optimiser, the LTS baseline and the detector, so `--resume` reproduces an uninterrupted run.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from neuralsim.bilevel.data import TrainingSet, draw_training_set
from neuralsim.bilevel.detector_task import DetectorTask
from neuralsim.bilevel.estimators import METHODS as ESTIMATORS, HypergradientConfig, hypergradient
from neuralsim.bilevel.field_source import FieldSource, SourceConfig, load_fields
from neuralsim.bilevel.reinforce import Reinforce, ReinforceConfig
from neuralsim.data.coco import load_coco
from neuralsim.errors import UserError
from neuralsim.runtime import (
    PhaseClock,
    RunDir,
    atomic_write_json,
    derive_seed,
    from_plain,
    read_json,
    resolve_device,
    to_plain,
)
from neuralsim.sampling.optim import PsiOptimizer, PsiOptimizerConfig
from neuralsim.sampling.psi import Psi, PsiInit, init_psi
from neuralsim.tasks.checkpoint import load_detector, save_detector
from neuralsim.tasks.data import CocoDetectionData, TensorDetectionData
from neuralsim.tasks.detector import DetectorConfig, build_from_config
from neuralsim.tasks.evaluate import evaluate_detector
from neuralsim.tasks.train import TrainConfig, train_detector

METHODS = ("ns", "nso", "autosim", "influence", "lts")


@dataclass
class OptimizeConfig:
    """Everything one `neuralsim optimize` run needs; saved as the run's config.json."""

    fields: dict[str, str]
    """Object (COCO category name) → fitted field folder."""
    val: str
    """Validation COCO set (drives ψ)."""
    test: str
    """Test COCO set (reported, never used for ψ)."""
    psi: str | None = None
    """Initial ψ file; None: uniform over `bins`."""
    bins: dict[str, int] = field(default_factory=lambda: {"azimuth": 8, "elevation": 1, "radius": 1})
    """Bins per factor when ψ starts uniform."""
    lighting: list[str] = field(default_factory=lambda: ["studio"])
    """Lighting conditions (field anchors) ψ mixes when it starts uniform."""
    factors: list[str] = field(default_factory=lambda: ["azimuth"])
    """Factors of ψ to optimise: azimuth, elevation, radius, lighting."""
    psi_objects: list[str] | None = None
    """Objects whose ψ is optimised; None: every object. The others keep their initial ψ and cost the estimator
    nothing (no probe renders, no pass 2): for a catalogue in which only some objects' target views are in
    question, e.g. new products next to ones whose data are known to match."""
    method: str = "nso"
    """ns (no optimisation), nso (Neural-Sim pathwise), autosim (score function), influence (ours), lts (REINFORCE)."""
    steps: int = 20
    """Outer steps."""
    images_per_object: int = 50
    """Training images rendered per object per outer step."""
    source: SourceConfig = field(default_factory=SourceConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    """Detector built from scratch when `detector_init` is None (num_classes and names come from the val set)."""
    detector_init: str | None = None
    """A detector folder (e.g. pre-trained on uniform-ψ data) to start from."""
    shots: str | None = None
    """A COCO set of labelled target-domain images (a few "shots") mixed into every outer step's detector
    training, next to the rendered ones; they do not depend on ψ, so they scale its hypergradient by N/(N + S)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, trainable="heads", init="warm", warmup_steps=10))
    theta: str = "heads"
    """θ of the hypergradient: 'heads', 'heads+fpn', 'all' or a regex on parameter names."""
    hypergradient: HypergradientConfig = field(default_factory=HypergradientConfig)
    psi_optimizer: PsiOptimizerConfig = field(default_factory=PsiOptimizerConfig)
    hvp_images: int = 48
    """Training images in the Hessian's subsample."""
    lts: ReinforceConfig = field(default_factory=ReinforceConfig)
    batch_size: int = 16
    """Images per batch in second-order computations and evaluation."""
    seed: int = 0
    device: str = "auto"

    ADDED_LATER: ClassVar[dict[str, Any]] = {"psi_objects": None}
    """Settings added after runs were first saved, with the value that reproduces a run saved without them."""

    def __post_init__(self):
        # The estimator follows `method`: hypergradient.method left at its default takes it, another one is an error
        # (a config saying method "influence" must not run the nso estimator under that name).
        stated = self.hypergradient.method
        if self.method in ESTIMATORS and stated != self.method:
            if stated != HypergradientConfig.method:
                raise UserError(f"method is {self.method!r} but hypergradient.method is {stated!r}; they must agree "
                                "(hypergradient.method may be left out).")
            self.hypergradient = dataclasses.replace(self.hypergradient, method=self.method)

    def with_overrides(self, **overrides) -> OptimizeConfig:
        """This config with some fields replaced; a new `method` takes the estimator with it (an estimator method sets
        hypergradient.method, the others reset it to the default)."""
        if "method" in overrides:
            method = overrides["method"]
            estimator = method if method in ESTIMATORS else HypergradientConfig.method
            overrides["hypergradient"] = dataclasses.replace(self.hypergradient, method=estimator)
        return dataclasses.replace(self, **overrides)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}.")
        if self.steps < 1 or self.images_per_object < 1 or self.hvp_images < 1:
            raise UserError("steps, images_per_object and hvp_images must be at least 1.")
        if self.method != "ns" and not self.factors:
            raise UserError(f"method {self.method} needs at least one factor of ψ to optimise (factors is empty).")
        if self.method != "ns" and self.psi_objects is not None and not self.psi_objects:
            raise UserError(f"method {self.method} needs at least one object whose ψ to optimise (psi_objects is "
                            "empty; leave it out to optimise every object).")
        if "lighting" in self.factors and (self.method in ("autosim", "lts") or (
                self.method == "influence" and not self.hypergradient.influence_pathwise_lighting)):
            raise UserError(f"method {self.method} cannot optimise the lighting weights: its estimate covers the bin "
                            "logits only (the weights are mixed, not drawn). Use nso or influence for lighting.")
        if self.source.size != self.detector.image_size and self.detector_init is None:
            raise UserError(f"source.size ({self.source.size}) and detector.image_size ({self.detector.image_size}) differ.")


def load_config(path: str | Path) -> OptimizeConfig:
    return from_plain(OptimizeConfig, read_json(path, "Optimize config"), f"Optimize config {path}")


class BilevelRun:
    """One run directory: its data, ψ, detector and ψ optimiser, stepped one outer step at a time."""

    def __init__(self, cfg: OptimizeConfig, out: str | Path, resume: bool = False, overwrite: bool = False):
        cfg.validate()
        self.cfg, self.device = cfg, resolve_device(cfg.device)
        self.val_set, self.test_set = load_coco(cfg.val), load_coco(cfg.test)
        self.names = self.val_set.category_names
        if self.test_set.category_names != self.names:
            raise UserError(f"The test set's categories {self.test_set.category_names} differ from the validation "
                            f"set's {self.names}.")
        self.val, self.test = CocoDetectionData(self.val_set), CocoDetectionData(self.test_set)
        self.shots = self._load_shots(cfg.shots)
        if self.val.height != cfg.source.size:
            raise UserError(f"Validation images are {self.val.width}x{self.val.height} px but source.size is {cfg.source.size}.")
        self.psi = self._initial_psi()
        self.fields = load_fields({o: cfg.fields[o] for o in self.names if o in cfg.fields}, self.device)
        self.source = FieldSource(self.fields, self.names, self.psi.lighting_names(), cfg.source)
        self.model = self._initial_detector()
        self.run = RunDir(out, to_plain(cfg), resume=resume, overwrite=overwrite)
        self.optimizer = PsiOptimizer(self.psi, cfg.psi_optimizer)
        self.lts = Reinforce(self._lts_train_and_evaluate, self.source, cfg.lts)
        self.next_step = 0
        if resume:
            self._load_checkpoint()

    # ------------------------------------------------------------------ set-up

    def _initial_psi(self) -> Psi:
        cfg = self.cfg
        if cfg.psi is not None:
            psi = Psi.load(cfg.psi)
        else:
            psi = init_psi(PsiInit(objects=list(self.names), bins=dict(cfg.bins), lighting=list(cfg.lighting)))
        missing = [o for o in self.names if o not in psi.objects]
        if missing:
            raise UserError(f"ψ has no distribution for object(s) {missing} of the validation set.")
        psi = Psi({o: psi.objects[o] for o in self.names})
        self._set_trainable(psi)
        factors = [] if cfg.method == "ns" else cfg.factors
        optimised = [psi.objects[o] for o in (cfg.psi_objects if cfg.psi_objects is not None else self.names)]
        single = sorted({f for f in factors for o in optimised
                         if len(o.lighting.names if f == "lighting" else o.factors[f].probs()) < 2})
        if single:
            raise UserError(f"Factor(s) {', '.join(single)} of ψ are to be optimised but have a single bin (or lighting "
                            "condition), so their gradient is always 0: give them more bins or leave them out of factors.")
        return psi

    def _set_trainable(self, psi: Psi) -> None:
        """ψ's leaves to optimise: the configured factors of the configured objects (none under `ns`)."""
        cfg = self.cfg
        psi.set_trainable([] if cfg.method == "ns" else cfg.factors, cfg.psi_objects)  # refuses unknown names

    def _load_shots(self, path: str | None) -> TensorDetectionData | None:
        if path is None:
            return None
        shots = CocoDetectionData(load_coco(path))
        if shots.category_names != self.names:
            raise UserError(f"The shots' categories {shots.category_names} differ from the validation set's {self.names}.")
        if (shots.height, shots.width) != (self.val.height, self.val.width):
            raise UserError(f"Shot images are {shots.width}x{shots.height} px but validation images "
                            f"{self.val.width}x{self.val.height}.")
        images, targets = shots.batch(list(range(len(shots))))
        return TensorDetectionData(images, targets, list(self.names))

    def _initial_detector(self):
        cfg = self.cfg
        if cfg.detector_init is not None:
            model = load_detector(cfg.detector_init)
            if model.config.num_classes != len(self.names):
                raise UserError(f"Detector {cfg.detector_init} has {model.config.num_classes} classes but the "
                                f"validation set has {len(self.names)}.")
            names = list(model.config.category_names)
            if names and names != list(self.names):
                raise UserError(f"Detector {cfg.detector_init} has its classes in another order ({', '.join(names)}) "
                                f"than the validation set ({', '.join(self.names)}).")
        else:
            dcfg = copy.deepcopy(cfg.detector)
            dcfg.num_classes, dcfg.category_names = len(self.names), list(self.names)
            model = build_from_config(dcfg, seed=derive_seed(cfg.seed, "detector"))
        hg = cfg.hypergradient
        if cfg.method == "nso" and hg.pathwise_labels and model.config.box_loss == "l1":
            warnings.warn("The detector's box loss is L1, whose θ-gradient holds only the signs of the box residuals: "
                          "nso's derivative cannot see the boxes move. Use box_loss smooth_l1 or giou.", stacklevel=2)
        return model.to(self.device)

    # ------------------------------------------------------------------ checkpoints

    @property
    def checkpoint_dir(self) -> Path:
        return self.run.path / "checkpoint"

    def _save_checkpoint(self, step: int) -> None:
        # The detector goes to a folder of its own step and state.json, written last and atomically, names it: a kill
        # between the two writes leaves the previous step's state with the previous step's detector.
        detector = f"detector-{step:04d}"
        save_detector(self.model, self.checkpoint_dir / detector)
        atomic_write_json(self.checkpoint_dir / "state.json", {
            "step": step, "detector": detector, "psi": self.psi.to_json(),
            "psi_optimizer": self.optimizer.state_dict(), "lts_baseline": self.lts.baseline})
        for old in self.checkpoint_dir.glob("detector*"):
            if old.name != detector and old.is_dir():
                shutil.rmtree(old)
        self.psi.save(self.run.path / "psi.json")

    def _load_checkpoint(self) -> None:
        path = self.checkpoint_dir / "state.json"
        if not path.is_file():  # killed before the first step was checkpointed: start from the beginning
            if (self.run.path / "metrics.jsonl").is_file():
                self.run.truncate_metrics(-1)  # its step 0 may be logged already
            return
        state = read_json(path, "Checkpoint")
        self.psi.objects = Psi.from_json(state["psi"], "checkpointed ψ").objects
        self._set_trainable(self.psi)
        self.optimizer = PsiOptimizer(self.psi, self.cfg.psi_optimizer)
        self.optimizer.load_state_dict(state["psi_optimizer"])
        self.lts.baseline = state["lts_baseline"]
        self.model = load_detector(self.checkpoint_dir / state.get("detector", "detector"), self.device)
        self.next_step = int(state["step"]) + 1
        self.run.truncate_metrics(int(state["step"]))

    # ------------------------------------------------------------------ one outer step

    def counts(self) -> dict[str, int]:
        return {o: self.cfg.images_per_object for o in self.names}

    def _training_pool(self, train: TrainingSet) -> tuple[Tensor, list]:
        """The images and targets the detector trains on: the rendered set, then the shots if any."""
        if self.shots is None:
            return train.images, list(train.targets)
        return torch.cat([train.images, self.shots.images]), list(train.targets) + list(self.shots.targets)

    def _train(self, model, train: TrainingSet, step: int) -> None:
        data = TensorDetectionData(*self._training_pool(train), list(self.names))
        tcfg = dataclasses.replace(self.cfg.train, seed=derive_seed(self.cfg.seed, "train", step)) if self.cfg.train.init == "warm" \
            else self.cfg.train
        train_detector(model, data, tcfg, show_progress=False)

    def val_loss(self, model) -> float:
        return float(self.losses(model, self.val).mean())

    @torch.no_grad()
    def losses(self, model, data: CocoDetectionData) -> Tensor:
        """(N,) detection loss of each image of `data` (eval-mode normalisation), in its stored order."""
        model.eval()
        out = []
        for start in range(0, len(data), self.cfg.batch_size):
            images, targets = data.batch(list(range(start, min(start + self.cfg.batch_size, len(data)))))
            targets = [{k: v.to(self.device) for k, v in t.items()} for t in targets]
            out.append(model(images.to(self.device), targets, detect=False).loss_per_image().cpu())
        return torch.cat(out)

    def loss_record(self, model, split: str, data: CocoDetectionData) -> dict:
        """The mean loss of a set and its mean over the images showing each class (an image showing several classes
        counts for each): `{split}_loss` and `{split}_loss_per_class`, None for a class the set does not show."""
        losses = self.losses(model, data)
        shown = [set(data.target(j)["labels"].tolist()) for j in range(len(data))]
        per_class = {}
        for c, name in enumerate(self.names):
            rows = [j for j, labels in enumerate(shown) if c in labels]
            per_class[name] = float(losses[rows].mean()) if rows else None
        return {f"{split}_loss": float(losses.mean()), f"{split}_loss_per_class": per_class}

    def lts_hypergradient(self, generator: torch.Generator, t: int) -> tuple[dict[str, Tensor], list[float], list]:
        """LTS's estimate at step t from the current detector: K copies of it trained on sets drawn from ψ, the
        gradient from their validation losses; also the K rewards and the K trained detectors."""
        self._lts_base, self._lts_models, self._step = self.model, [], t
        grads, rewards = self.lts.hypergradient(self.psi, self.counts(), generator)
        models, self._lts_models = self._lts_models, []
        return grads, rewards, models

    def _lts_train_and_evaluate(self, train: TrainingSet) -> float:
        model = copy.deepcopy(self._lts_base)
        self._train(model, train, self._step)
        self._lts_models.append(model)
        return -self.val_loss(model)

    def step(self, t: int) -> dict:
        cfg, clock = self.cfg, PhaseClock(self.device)
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "step", t))
        start = time.perf_counter()
        cg_residual, cg_negative, grads, rewards = None, None, None, None
        psi_used = self.psi.probabilities()  # ψ_t, which drew this step's data
        if cfg.method == "lts":
            with clock("lts"):
                grads, rewards, models = self.lts_hypergradient(generator, t)
            self.model = models[0]  # trained on a set drawn from ψ_t, like every other method's
            train = None
        else:
            tau = cfg.hypergradient.draw_tau if cfg.method != "ns" else None
            with clock("render"):  # pass 1
                train = draw_training_set(self.psi, self.counts(), self.source, generator, tau)
            with clock("train"):
                self._train(self.model, train, t)
            if cfg.method != "ns":
                images, targets = self._training_pool(train)
                sub = torch.randperm(len(images), generator=generator)[: cfg.hvp_images]
                task = DetectorTask(self.model, cfg.theta, images[sub], [targets[i] for i in sub], self.val,
                                    cfg.batch_size)
                result = hypergradient(self.psi, train, task, cfg.hypergradient, render=self.source,
                                       generator=generator, render_vjp=self.source.vjp, clock=clock)
                share = len(train) / len(images)  # L_train averages over the shots too
                grads, cg_residual = {n: share * g for n, g in result.grads.items()}, result.inverse.residual
                cg_negative = result.inverse.negative_curvature
        if grads is not None:
            self.optimizer.step(grads)
        with clock("evaluate"):
            losses = self.loss_record(self.model, "val", self.val) | self.loss_record(self.model, "test", self.test)
            test = evaluate_detector(self.model, self.test, batch_size=cfg.batch_size)
        timing = clock.seconds | {"total": time.perf_counter() - start}
        # every image rendered this step: the training set(s), and what the estimator rendered beyond them
        renders = {"training": len(self.names) * cfg.images_per_object * (cfg.lts.datasets if cfg.method == "lts" else 1),
                   **clock.counts}
        if train is not None and t in (0, cfg.steps - 1):
            self._save_samples(train, t)
        record = {
            "method": cfg.method, **losses, "test_ap": test.ap, "test_ap50": test.ap50,
            "per_class": test.per_class, "psi": psi_used, "psi_after": self.psi.probabilities(), "cg_residual": cg_residual,
            "cg_negative_curvature": cg_negative, "lts_rewards": rewards,
            "hypergradient_norm": None if grads is None else float(torch.sqrt(sum((g * g).sum() for g in grads.values()))),
            # h per ψ leaf ("object/factor"), before the ψ optimiser: its agreement from step to step tells signal from noise
            "hypergradient": None if grads is None else {n: g.detach().flatten().tolist() for n, g in grads.items()},
            "seconds": timing, "peak_memory_mb": max(clock.peak_mb.values()), "peak_memory_mb_by_phase": clock.peak_mb,
            "detector_trainings": cfg.lts.datasets if cfg.method == "lts" else 1,
            "images_rendered": sum(renders.values()), "renders": renders,
        }
        self.run.log(t, **record)
        self._save_checkpoint(t)
        return record

    def _save_samples(self, train: TrainingSet, t: int) -> None:
        """A few generated training images (two per object) with their boxes, for the report."""
        from neuralsim.runtime import atomic_save_png

        picks = [d.rows.start + i for d in train.draws for i in range(min(2, d.rows.stop - d.rows.start))]
        tiles = []
        for j in picks:
            img = (train.images[j].permute(1, 2, 0).numpy() * 255).astype(np.uint8).copy()
            for box in train.targets[j]["boxes"].numpy().astype(int):
                x1, y1, x2, y2 = np.clip(box, 0, [img.shape[1] - 1, img.shape[0] - 1] * 2)
                img[y1, x1:x2 + 1] = img[y2, x1:x2 + 1] = img[y1:y2 + 1, x1] = img[y1:y2 + 1, x2] = [0, 255, 0]
            tiles.append(img)
        atomic_save_png(self.run.path / "samples" / f"step_{t:03d}.png", np.concatenate(tiles, axis=1))

    def run_all(self, on_step=None) -> Path:
        for t in range(self.next_step, self.cfg.steps):
            record = self.step(t)
            if on_step is not None:
                on_step(t, record)
        self.run.close()
        return self.run.path
