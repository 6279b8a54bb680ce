"""The stages of `neuralsim learn`, each a plain function of files on disk whose output is written once, whole:
objects → fields, photos → working sets, ψ₀ = domain randomisation, ψ learned, the dataset exported, the judge,
the report. A stage whose output exists is skipped, so a run killed at any point resumes with the same bytes.

    out/
      config.json  neuralsim.json  stages.json         the project's settings, the version, time per stage
      photos/{val,test}/  photos/split.json            letterboxed working sets and which photo went where
      psi0.json                                        domain randomisation: uniform over every factor's range
      learn/                                           the optimize run (its pre-trained detector, ψ per step)
      dataset/                                         the learned dataset: COCO (+ yolo/) at the export size
      judge/{learned,dr}-s<k>.json  judge/detector/    paired scores on the test photos; the learned detector
      report.html  summary.json
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuralsim.bilevel.estimators import LOGITS_ONLY
from neuralsim.errors import UserError
from neuralsim.learn.project import MESH_SUFFIXES, ObjectEntry, ProjectConfig
from neuralsim.runtime import RunDir, atomic_write_json, read_json, to_plain

STAGES = ("objects", "photos", "psi0", "learn", "export", "judge", "report")


@dataclass
class Learn:
    """One `learn` output folder and what its stages have made so far."""

    project: ProjectConfig
    out: Path
    log: Callable[[str], None] = print
    fields: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    executor: Any = None
    """Runs the objects' fields and the judge's trainings (`neuralsim.distributed`); None: one after another here."""

    @property
    def names(self) -> list[str]:
        return self.project.names()

    def run(self, overwrite: bool = False, until: str = STAGES[-1]) -> dict:
        """Every stage in order up to `until`, continuing a run of the same project in `out`; returns the summary
        (empty when the report is not reached)."""
        self.check_inputs()
        resume = (self.out / "config.json").is_file() and not overwrite
        if resume:
            RunDir.check_version(self.out)
            if read_json(self.out / "config.json", "Project record") != to_plain(self.project):
                raise UserError(f"{self.out} holds the run of another project (or other settings); give another --out, "
                                "or --overwrite to start again.")
        RunDir(self.out, to_plain(self.project), resume=resume, overwrite=overwrite)
        timings = self.out / "stages.json"
        self.seconds = read_json(timings, "Stage times") if timings.is_file() else {}
        summary = {}
        for stage in STAGES[:STAGES.index(until) + 1]:
            start = time.perf_counter()
            self.log(f"[{STAGES.index(stage) + 1}/{len(STAGES)}] {stage}")
            result = getattr(self, f"stage_{stage}")()
            summary = result if stage == "report" else summary
            took = time.perf_counter() - start
            if took > 1.0 or stage not in self.seconds:  # a stage that was already done keeps its first time
                self.seconds[stage] = round(took, 1)
            atomic_write_json(timings, self.seconds)
        return summary

    # ------------------------------------------------------------------ inputs, checked before anything is written

    def check_inputs(self) -> None:
        """Every object loads and every photo reads and names an object, before the first file is written."""
        from neuralsim.data.photos import load_photos

        for entry in self.project.entries():
            kind_of(entry)
        names, photos = self.names, self.project.photos
        for path in (photos.coco,) if photos.coco else (photos.val, photos.test):
            load_photos(path, names)
        if self.project.backgrounds is not None:
            from neuralsim.data.backgrounds import FolderBackgrounds

            FolderBackgrounds(self.project.backgrounds)  # a folder of readable photos

    # ------------------------------------------------------------------ stages

    def stage_objects(self) -> None:
        """Each object as a fitted field: meshes and built-ins captured (Mitsuba) and fitted, captures fitted, fields
        taken as they are; captures and fields of meshes are cached across projects."""
        from neuralsim.assets.capture import CaptureConfig
        from neuralsim.distributed import Serial, gpus_per_task
        from neuralsim.experiments.cache import cache_root, ensure_capture, ensure_field
        from neuralsim.fit.trainer import FitConfig
        from neuralsim.runtime import resolve_device

        prep, root = self.project.prepare, cache_root(self.project.cache)
        capture_cfg = CaptureConfig(views=prep.views, size=prep.capture_size, lighting=list(prep.lighting),
                                    radius=(3.5, 5.5))
        fit_cfg = FitConfig(steps=prep.fit_steps, rays_per_step=prep.fit_rays, eval_every=0)
        device = str(resolve_device(self.project.device))
        kinds = [kind_of(entry) for entry in self.project.entries()]
        for name, kind in zip(self.names, kinds):
            self.log(f"  {name}: {kind}")
        # one piece per capture or mesh, however many objects name it: two pieces must not build one cache entry
        pieces = list(dict.fromkeys((kind, entry.source) for entry, kind in zip(self.project.entries(), kinds)
                                    if kind != "field"))
        if pieces:
            root.mkdir(parents=True, exist_ok=True)  # seen by every worker before any of them writes to it
        executor = self.executor or Serial()
        here = isinstance(executor, Serial)  # a progress bar in this terminal, none in a worker's output

        def object_field(piece: tuple[str, str]) -> str:
            kind, source = piece
            capture = source if kind == "capture" else ensure_capture(root, source, capture_cfg)
            return str(ensure_field(root, Path(capture), fit_cfg, device, show_progress=here))

        made = dict(executor.map_unordered(
            object_field, pieces, num_gpus=gpus_per_task(device), name=lambda p: f"  field of {p[1]}",
            needs=lambda p: [root] + ([p[1]] if p[0] != "builtin" else []), makes=lambda p, path: [path], log=self.log))
        for entry, name, kind in zip(self.project.entries(), self.names, kinds):  # the objects' order
            self.fields[name] = entry.source if kind == "field" else made[(kind, entry.source)]

    def stage_photos(self) -> None:
        """The photos split into validation and test (seeded, by class) and letterboxed to the working size."""
        from neuralsim.data.photos import load_photos, split_photos, write_working_set

        folder, photos = self.out / "photos", self.project.photos
        if (folder / "test").is_dir():
            return
        if photos.coco is not None:
            coco = load_photos(photos.coco, self.names)
            val_ids, test_ids = split_photos(coco, photos.val_fraction, self.project.seed)
            sets = {"val": (coco, val_ids), "test": (coco, test_ids)}
        else:
            val, test = load_photos(photos.val, self.names), load_photos(photos.test, self.names)
            sets = {"val": (val, [s.image_id for s in val.samples]), "test": (test, [s.image_id for s in test.samples])}
        atomic_write_json(folder / "split.json", {split: ids for split, (_, ids) in sets.items()})
        for split, (coco, ids) in sets.items():  # test last: its folder marks the stage done
            write_working_set(coco, ids, self.project.size, folder, split, categories=self.names)

    def stage_psi0(self) -> None:
        """Domain randomisation: ψ₀ uniform over every factor's range and every lighting condition all fields share."""
        from neuralsim.sampling.init import PsiInit, init_psi

        path = self.out / "psi0.json"
        if path.is_file():
            return
        bins = self.project.learn.bins
        init_psi(PsiInit(objects=self.names, bins=dict(bins), ranges=dict(self.project.ranges),
                         lighting=self.shared_lighting())).save(path)

    def stage_learn(self) -> None:
        """ψ learned from ψ₀ against the validation photos (`neuralsim optimize`, resumed where it stopped)."""
        from neuralsim.bilevel.loop import BilevelRun

        run = self.out / "learn"
        if (run / "psi.json").is_file() and _steps_done(run) >= self.project.learn.steps:
            return
        resume = (run / "config.json").is_file()

        def show(t: int, record) -> None:
            ap = "–" if record.test_ap is None else f"{100 * record.test_ap:.1f}"
            self.log(f"  step {t + 1}/{self.project.learn.steps}: test AP {ap} (working frame), "
                     f"{record.seconds['total']:.0f} s")

        BilevelRun(self.optimize_config(), run, resume=resume).run_all(show)

    def stage_export(self) -> None:
        """The learned dataset at the export size, with per-class quotas, as COCO and YOLO."""
        from neuralsim.bilevel.export import export_dataset
        from neuralsim.sampling.psi import Psi

        out = self.out / "dataset"
        if out.is_dir():
            return
        ex = self.project.export
        quotas = {o: ex.quotas.get(o, ex.images_per_object) for o in self.names}
        source = dataclasses.replace(self.optimize_config().source, size=ex.size)
        export_dataset(self.fields, Psi.load(self.out / "learn" / "psi.json"), quotas, out, source, seed=self.project.seed,
                       formats=tuple(ex.formats), device=self._device())

    def stage_judge(self) -> None:
        """Per seed, a detector trained from scratch on learned data and one on domain-randomisation data with the
        same random numbers, both scored on the test photos in their own pixel frame."""
        from neuralsim.distributed import Serial, gpus_per_task
        from neuralsim.learn.judge import PSIS, _judged

        executor = self.executor or Serial()
        # a worker's copy logs to its own output, which Ray forwards here
        run = self if isinstance(executor, Serial) else dataclasses.replace(self, log=print, executor=None)
        pieces = [(name, k) for k in range(self.project.judge.seeds) for name in PSIS]
        for _ in executor.map_unordered(lambda piece: _judged(run, *piece), pieces,
                                        num_gpus=gpus_per_task(str(self._device())),
                                        name=lambda p: f"  judge: {p[0]}, seed {p[1]}",
                                        needs=lambda p: [self.out / "photos" / "test", self.out.joinpath(*PSIS[p[0]]),
                                                         *self.fields.values()],
                                        makes=lambda p, _: [self.out / "judge" / f"{p[0]}-s{p[1]}.json"],
                                        log=None if isinstance(executor, Serial) else self.log):
            pass

    def stage_report(self) -> dict:
        from neuralsim.learn.report import write_report

        return write_report(self)

    # ------------------------------------------------------------------ shared pieces

    def optimize_config(self):
        """The optimize run's config: the project's `learn` with its inputs, ψ₀, image size and objects per image."""
        learn = self.project.learn
        factors = [f for f in learn.factors if not (f == "lighting" and learn.method.method in LOGITS_ONLY)]
        source = dataclasses.replace(learn.source, size=self.project.size, objects_per_image=self.objects_per_image(),
                                     background_photos=self.project.backgrounds or learn.source.background_photos)
        return dataclasses.replace(
            learn, fields=dict(self.fields), val=str(self.out / "photos" / "val"), test=str(self.out / "photos" / "test"),
            psi=str(self.out / "psi0.json"), factors=factors, source=source, seed=self.project.seed,
            device=self.project.device)

    def objects_per_image(self) -> int:
        """The project's, else the most objects one validation photo shows (at most the number of objects)."""
        if self.project.objects_per_image is not None:
            return min(self.project.objects_per_image, len(self.names))
        from neuralsim.data.coco import load_coco

        val = load_coco(self.out / "photos" / "val")
        return max(1, min(len(self.names), max(len(s.labels) for s in val.samples)))

    def shared_lighting(self) -> list[str]:
        from neuralsim.fields.checkpoint import field_info

        conditions = [field_info(self.fields[o])["appearance_names"] for o in self.names]
        shared = [c for c in conditions[0] if all(c in other for other in conditions)]
        if not shared:
            raise UserError(f"The fields of {', '.join(self.names)} share no lighting condition; fit them under at "
                            "least one common condition.")
        return shared

    def _device(self):
        from neuralsim.runtime import resolve_device

        return resolve_device(self.project.device)


def kind_of(entry: ObjectEntry) -> str:
    """builtin, mesh, capture or field; anything else is one clear error. A mesh is loaded to check it."""
    from neuralsim.assets.catalog import YCB_VIDEO

    source = Path(entry.source)
    if entry.source in YCB_VIDEO:
        return "builtin"
    if source.is_dir():
        if (source / "field.json").is_file():
            from neuralsim.fields.checkpoint import field_info

            field_info(source)
            return "field"
        if (source / "transforms.json").is_file():
            from neuralsim.data.transforms import load_capture

            load_capture(source)  # every frame decoded: no alpha and no mask is refused here
            return "capture"
        raise UserError(f"Object folder {source} holds neither a field (field.json) nor a capture (transforms.json).")
    if source.suffix.lower() in MESH_SUFFIXES or source.exists():
        from neuralsim.assets.meshes import load_asset

        load_asset(entry.source)
        return "mesh"
    raise UserError(f"Object {entry.source!r} is no built-in object (`neuralsim objects list`), mesh file, capture "
                    "folder or field folder.")


def _steps_done(run: Path) -> int:
    state = run / "checkpoint" / "state.json"
    return int(read_json(state, "Checkpoint")["step"]) + 1 if state.is_file() else 0
