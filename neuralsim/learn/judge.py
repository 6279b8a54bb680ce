"""The judge of a learned ψ: per seed, one detector trained from scratch on renders drawn from it and one on renders
drawn from domain randomisation (ψ₀) with the same random numbers — the same noise, backgrounds, initialisation and
batch order, so that only ψ differs — both scored on the test photos in the photos' own pixel frame."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from neuralsim.runtime import atomic_write_json, derive_seed, read_json, staged_output_dir

if TYPE_CHECKING:
    from neuralsim.learn.pipeline import Learn
    from neuralsim.sampling.psi import Psi
    from neuralsim.tasks.detector import Detector

PSIS = {"learned": ("learn", "psi.json"), "dr": ("psi0.json",)}


def judge_pair(run: Learn, k: int) -> dict[str, dict]:
    """Seed k's pair of scores ({"learned": …, "dr": …}), each made once into judge/<psi>-s<k>.json."""
    return {name: _judged(run, name, k) for name in PSIS}


def _judged(run: Learn, name: str, k: int) -> dict:
    path = run.out / "judge" / f"{name}-s{k}.json"
    if path.is_file():
        return read_json(path, "Judge result")
    from neuralsim.sampling.psi import Psi
    from neuralsim.tasks.checkpoint import save_detector

    judge = run.project.judge
    run.log(f"  seed {k}: detector from scratch on {judge.images_per_object} {name} images per object")
    scores, model = train_and_score(run, Psi.load(run.out.joinpath(*PSIS[name])), k, judge.images_per_object,
                                    judge.epochs)
    if name == "learned" and k == 0 and not (run.out / "judge" / "detector").is_dir():
        with staged_output_dir(run.out / "judge" / "detector") as stage:
            save_detector(model, stage)
    result = {"psi": name, "seed": k, **scores, "images_per_object": judge.images_per_object, "epochs": judge.epochs}
    atomic_write_json(path, result)
    return result


def train_and_score(run: Learn, psi: Psi, k: int, images_per_object: int, epochs: int,
                    show_progress: bool = True) -> tuple[dict, Detector]:
    """Seed k's detector trained from scratch on `images_per_object` renders per object drawn from ψ, and its scores
    on the run's test photos in their own pixels ({"ap", "ap50", "per_class"}). Every random number (scenes,
    draws, initialisation, batch order) comes from the run's seed and k alone, so two ψ under one k are paired."""
    from neuralsim.bilevel.field_source import FieldSource, load_fields
    from neuralsim.bilevel.pretrain import train_on_psi
    from neuralsim.data.coco import load_coco
    from neuralsim.data.photos import evaluate_in_photo_frame, load_photos
    from neuralsim.tasks.data import CocoDetectionData
    from neuralsim.tasks.evaluate import predict

    project, device, cfg = run.project, run._device(), run.optimize_config()
    source_cfg = dataclasses.replace(cfg.source, seed=derive_seed(project.seed, "judge", "scenes", k))
    source = FieldSource(load_fields({o: run.fields[o] for o in run.names}, device), run.names, psi.lighting_names(),
                         source_cfg, others=psi)
    model = train_on_psi(cfg.detector, psi, source, run.names, project.size, images_per_object, epochs,
                         seed=derive_seed(project.seed, "judge", "detector", k),
                         draw_seed=derive_seed(project.seed, "judge", "draws", k), device=device,
                         show_progress=show_progress)
    working = load_coco(run.out / "photos" / "test")
    photos = load_photos(project.photos.coco or project.photos.test, run.names)
    scores = evaluate_in_photo_frame(predict(model, CocoDetectionData(working), batch_size=cfg.batch_size), working,
                                     photos)
    return {"ap": scores.ap, "ap50": scores.ap50, "per_class": scores.per_class}, model
