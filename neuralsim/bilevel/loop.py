"""The bilevel loop (DESIGN.md §2): each outer step the method draws D_train(ψ) from the fields, trains the
detector and estimates dL_val/dψ; ψ takes a step, the test set is scored, everything is checkpointed.

Every outer step t uses its own generator seeded from (seed, t), and the checkpoint after step t holds
ψ, the ψ optimiser, the method's state and the detector, so `--resume` reproduces an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from neuralsim.bilevel.config import OptimizeConfig
from neuralsim.bilevel.data import TrainingSet
from neuralsim.bilevel.detector_task import DetectorTask
from neuralsim.bilevel.estimators import StepInputs, StepOutcome
from neuralsim.bilevel.field_source import FieldSource, load_fields
from neuralsim.bilevel.pretrain import train_on_psi
from neuralsim.bilevel.record import StepRecord
from neuralsim.clock import PhaseClock
from neuralsim.data.boxes import draw_boxes
from neuralsim.data.coco import load_coco
from neuralsim.errors import UserError
from neuralsim.runtime import (
    RunDir,
    atomic_save_png,
    atomic_write_json,
    derive_seed,
    read_json,
    resolve_device,
    staged_output_dir,
    to_plain,
)
from neuralsim.sampling.init import PsiInit, init_psi
from neuralsim.sampling.optim import PsiOptimizer
from neuralsim.sampling.psi import Psi
from neuralsim.tasks.checkpoint import load_detector, save_detector
from neuralsim.tasks.data import CocoDetectionData, TensorDetectionData
from neuralsim.tasks.evaluate import evaluate_detector, image_losses, loss_by_class
from neuralsim.tasks.train import train_detector


class BilevelRun:
    """One run directory: its data, ψ, detector and ψ optimiser, stepped one outer step at a time. Every input is
    checked before the folder is written."""

    def __init__(self, cfg: OptimizeConfig, out: str | Path, resume: bool = False, overwrite: bool = False):
        cfg.validate()
        self.cfg, self.device = cfg, resolve_device(cfg.device)
        self.val, self.test = (CocoDetectionData(load_coco(p)) for p in (cfg.val, cfg.test))
        self.names = list(self.val.category_names)
        if self.test.category_names != self.names:
            raise UserError(f"The test set's categories {self.test.category_names} differ from the validation "
                            f"set's {self.names}.")
        self.size = self._image_size()
        self.shots = self._load_shots(cfg.shots)
        missing = [o for o in self.names if o not in cfg.fields]
        if missing:
            raise UserError(f"No radiance field was given for object(s) {missing} of the validation set.")
        fields = load_fields({o: cfg.fields[o] for o in self.names}, self.device)
        self.psi = self._initial_psi(fields)
        source = dataclasses.replace(cfg.source, size=self.size, seed=cfg.seed)
        self.source = FieldSource(fields, self.names, self.psi.lighting_names(), source, others=self.psi)
        self.model = self._load_detector(cfg.detector_init) if cfg.detector_init else None
        self.run = RunDir(out, to_plain(cfg), resume=resume, overwrite=overwrite)
        if self.model is None:
            self.model = self._pretrained()
        self.optimizer = PsiOptimizer(self.psi, cfg.psi_optimizer)
        self.method_state: dict = {}
        self.next_step = 0
        if resume:
            self._load_checkpoint()

    # ------------------------------------------------------------------ set-up

    def _image_size(self) -> int:
        """The side of the square validation images, which the renders and the detector take."""
        h, w, stated = self.val.height, self.val.width, self.cfg.source.size
        if h != w:
            raise UserError(f"Validation images are {w}x{h} px; the training renders are square, so they must be too.")
        if stated is not None and stated != h:
            raise UserError(f"Validation images are {w}x{h} px but source.size is {stated} (leave it out to follow "
                            "the validation set).")
        return h

    def _initial_psi(self, fields: dict) -> Psi:
        cfg = self.cfg
        shared = [n for n in fields[self.names[0]].appearance.names if all(n in f.appearance.names for f in fields.values())]
        lighting = cfg.lighting if cfg.lighting is not None else shared
        psi = Psi.load(cfg.psi) if cfg.psi is not None else init_psi(
            PsiInit(objects=self.names, bins=dict(cfg.bins), lighting=list(lighting)))
        missing = [o for o in self.names if o not in psi.objects]
        if missing:
            raise UserError(f"ψ has no distribution for object(s) {missing} of the validation set.")
        psi = Psi({o: psi.objects[o] for o in self.names})
        psi.set_trainable(cfg.optimised_factors(), cfg.psi_objects)  # refuses unknown names
        optimised = [psi.objects[o] for o in (cfg.psi_objects if cfg.psi_objects is not None else self.names)]
        single = sorted({f for f in cfg.optimised_factors() for o in optimised
                         if len(o.lighting.names if f == "lighting" else o.factors[f].probs()) < 2})
        if single:
            raise UserError(f"Factor(s) {', '.join(single)} of ψ are to be optimised but have a single bin (or lighting "
                            "condition), so their gradient is always 0: give them more bins or leave them out of factors.")
        return psi

    def _load_shots(self, path: str | None) -> TensorDetectionData | None:
        if path is None:
            return None
        shots = CocoDetectionData(load_coco(path))
        if shots.category_names != self.names:
            raise UserError(f"The shots' categories {shots.category_names} differ from the validation set's {self.names}.")
        if (shots.height, shots.width) != (self.val.height, self.val.width):
            raise UserError(f"Shot images are {shots.width}x{shots.height} px but validation images "
                            f"{self.val.width}x{self.val.height}.")
        return TensorDetectionData(*shots.batch(list(range(len(shots)))), self.names)

    def _load_detector(self, path: str):
        model = load_detector(path)
        names = list(model.config.category_names)
        if model.config.num_classes != len(self.names) or (names and names != self.names):
            raise UserError(f"Detector {path} has the classes {names or model.config.num_classes} but the "
                            f"validation set {', '.join(self.names)} (the same, in the same order, are needed).")
        if self.cfg.method.method == "nso" and model.config.box_loss == "l1":
            warnings.warn("The detector's box loss is L1, whose θ-gradient holds only the signs of the box residuals: "
                          "nso's derivative cannot see the boxes move. Use box_loss smooth_l1 or giou.", stacklevel=2)
        return model.to(self.device)

    def _pretrained(self):
        """A detector trained from scratch on renders drawn from ψ₀, kept in the run folder (made once)."""
        path, cfg = self.run.path / "pretrained", self.cfg
        if path.is_dir():  # made in a staged folder: it is complete
            return load_detector(path, self.device)
        model = train_on_psi(cfg.detector, self.psi, self.source, self.names, self.size, cfg.pretrain.images_per_object,
                             cfg.pretrain.epochs, derive_seed(cfg.seed, "pretrain"), derive_seed(cfg.seed, "pretrain", "draws"),
                             self.device, show_progress=True)
        with staged_output_dir(path) as stage:
            save_detector(model, stage)
        return model

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
            "psi_optimizer": self.optimizer.state_dict(), "method_state": self.method_state})
        for old in self.checkpoint_dir.glob("detector*"):
            if old.name != detector and old.is_dir():
                shutil.rmtree(old)
        self.psi.save(self.run.path / "psi.json")

    def _load_checkpoint(self) -> None:
        path = self.checkpoint_dir / "state.json"
        if not path.is_file():  # killed before the first step was checkpointed: start from the beginning
            self.run.truncate_metrics(-1)  # its step 0 may be logged already
            return
        state = read_json(path, "Checkpoint")
        self.psi.objects = Psi.from_json(state["psi"], "checkpointed ψ").objects
        self.psi.set_trainable(self.cfg.optimised_factors(), self.cfg.psi_objects)
        self.optimizer = PsiOptimizer(self.psi, self.cfg.psi_optimizer)
        self.optimizer.load_state_dict(state["psi_optimizer"])
        self.method_state = state["method_state"]
        self.model = load_detector(self.checkpoint_dir / state["detector"], self.device)
        self.next_step = int(state["step"]) + 1
        self.run.truncate_metrics(int(state["step"]))

    # ------------------------------------------------------------------ one outer step

    def _train_fn(self, step: int):
        """Train a detector in place on a rendered set joined by the shots, with step t's batch order."""
        cfg = self.cfg.train
        cfg = dataclasses.replace(cfg, seed=derive_seed(self.cfg.seed, "train", step)) if cfg.init == "warm" else cfg

        def train(model, rendered: TrainingSet) -> None:
            images, targets = self._training_pool(rendered)
            train_detector(model, TensorDetectionData(images, targets, self.names), cfg, show_progress=False)
        return train

    def _training_pool(self, train: TrainingSet):
        if self.shots is None:
            return train.images, list(train.targets)
        return torch.cat([train.images, self.shots.images]), list(train.targets) + list(self.shots.targets)

    def _task_fn(self, generator: torch.Generator):
        """The detector as a second-order task, its Hessian on a random subsample of the training pool."""
        def task(model, train: TrainingSet) -> DetectorTask:
            images, targets = self._training_pool(train)
            sub = torch.randperm(len(images), generator=generator)[: self.cfg.hypergradient.hvp_images]
            return DetectorTask(model, self.cfg.theta, images[sub], [targets[i] for i in sub], self.val,
                                self.cfg.batch_size)
        return task

    def val_loss(self, model) -> float:
        return float(image_losses(model, self.val, self.cfg.batch_size).mean())

    def step(self, t: int) -> StepRecord:
        cfg, clock, start = self.cfg, PhaseClock(self.device), time.perf_counter()
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, "step", t))
        psi_used = self.psi.probabilities()  # ψ_t, which draws this step's data
        outcome = cfg.method.step(StepInputs(
            psi=self.psi, counts={o: cfg.images_per_object for o in self.names}, render=self.source,
            render_vjp=self.source.vjp, model=self.model, train=self._train_fn(t), task=self._task_fn(generator),
            val_loss=self.val_loss, shots=0 if self.shots is None else len(self.shots), second_order=cfg.hypergradient,
            generator=generator, clock=clock, state=self.method_state))
        self.model, self.method_state = outcome.model, outcome.state or self.method_state
        if outcome.grads is not None:
            self.optimizer.step(outcome.grads)
        with clock("evaluate"):
            val, test = image_losses(self.model, self.val, cfg.batch_size), image_losses(self.model, self.test, cfg.batch_size)
            scores = evaluate_detector(self.model, self.test, batch_size=cfg.batch_size)
        record = self._record(outcome, clock, time.perf_counter() - start, psi_used, val, test, scores)
        self.run.log(t, **dataclasses.asdict(record))
        if outcome.train is not None and t in (0, cfg.steps - 1):
            atomic_save_png(self.run.path / "samples" / f"step_{t:03d}.png", sample_sheet(outcome.train))
        self._save_checkpoint(t)
        return record

    def _record(self, outcome: StepOutcome, clock: PhaseClock, total: float, psi_used, val, test, scores) -> StepRecord:
        grads = outcome.grads
        renders = {"training": outcome.training_renders, **clock.counts}
        return StepRecord(
            method=self.cfg.method.method, val_loss=float(val.mean()), val_loss_per_class=loss_by_class(val, self.val, self.names),
            test_loss=float(test.mean()), test_loss_per_class=loss_by_class(test, self.test, self.names),
            test_ap=scores.ap, test_ap50=scores.ap50, per_class=scores.per_class, psi=psi_used,
            psi_after=self.psi.probabilities(),
            hypergradient=None if grads is None else {n: g.detach().flatten().tolist() for n, g in grads.items()},
            hypergradient_norm=None if grads is None else float(torch.sqrt(sum((g * g).sum() for g in grads.values()))),
            cg_residual=None if outcome.inverse is None else outcome.inverse.residual,
            cg_negative_curvature=None if outcome.inverse is None else outcome.inverse.negative_curvature,
            lts_rewards=outcome.rewards, seconds=clock.seconds | {"total": total},
            peak_memory_mb=max(clock.peak_mb.values()), peak_memory_mb_by_phase=clock.peak_mb,
            detector_trainings=outcome.detector_trainings, images_rendered=sum(renders.values()), renders=renders)

    def run_all(self, on_step=None) -> Path:
        for t in range(self.next_step, self.cfg.steps):
            record = self.step(t)
            if on_step is not None:
                on_step(t, record)
        self.run.close()
        return self.run.path


def sample_sheet(train: TrainingSet, per_object: int = 2) -> np.ndarray:
    """A row of the first training images of each object with their boxes, (H, W·n, 3) uint8."""
    rows = [d.rows.start + i for d in train.draws for i in range(min(per_object, d.rows.stop - d.rows.start))]
    return np.concatenate([draw_boxes((train.images[j].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
                                      train.targets[j]["boxes"].numpy()) for j in rows], axis=1)
