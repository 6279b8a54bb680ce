"""The judge of a learned ψ: per seed, one detector trained from scratch on renders drawn from it and one on renders
drawn from domain randomisation (ψ₀) with the same random numbers — the same noise, backgrounds, initialisation and
batch order, so that only ψ differs — both scored on the test photos in the photos' own pixel frame."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from neuralsim.runtime import atomic_write_json, derive_seed, read_json, staged_output_dir

if TYPE_CHECKING:
    from neuralsim.learn.pipeline import Learn

PSIS = {"learned": ("learn", "psi.json"), "dr": ("psi0.json",)}


def judge_pair(run: Learn, k: int) -> dict[str, dict]:
    """Seed k's pair of scores ({"learned": …, "dr": …}), each made once into judge/<psi>-s<k>.json."""
    return {name: _judged(run, name, k) for name in PSIS}


def _judged(run: Learn, name: str, k: int) -> dict:
    path = run.out / "judge" / f"{name}-s{k}.json"
    if path.is_file():
        return read_json(path, "Judge result")
    from neuralsim.bilevel.field_source import FieldSource, load_fields
    from neuralsim.bilevel.pretrain import train_on_psi
    from neuralsim.data.coco import load_coco
    from neuralsim.data.photos import evaluate_in_photo_frame, load_photos
    from neuralsim.sampling.psi import Psi
    from neuralsim.tasks.checkpoint import save_detector
    from neuralsim.tasks.data import CocoDetectionData
    from neuralsim.tasks.evaluate import predict

    project, judge, device = run.project, run.project.judge, run._device()
    cfg = run.optimize_config()
    psi = Psi.load(run.out.joinpath(*PSIS[name]))
    source_cfg = dataclasses.replace(cfg.source, seed=derive_seed(project.seed, "judge", "scenes", k))
    source = FieldSource(load_fields({o: run.fields[o] for o in run.names}, device), run.names, psi.lighting_names(),
                         source_cfg, others=psi)
    run.log(f"  seed {k}: detector from scratch on {judge.images_per_object} {name} images per object")
    model = train_on_psi(cfg.detector, psi, source, run.names, project.size, judge.images_per_object, judge.epochs,
                         seed=derive_seed(project.seed, "judge", "detector", k),
                         draw_seed=derive_seed(project.seed, "judge", "draws", k), device=device, show_progress=True)
    working = load_coco(run.out / "photos" / "test")
    photos = load_photos(project.photos.coco or project.photos.test, run.names)
    scores = evaluate_in_photo_frame(predict(model, CocoDetectionData(working), batch_size=cfg.batch_size), working,
                                     photos)
    if name == "learned" and k == 0 and not (run.out / "judge" / "detector").is_dir():
        with staged_output_dir(run.out / "judge" / "detector") as stage:
            save_detector(model, stage)
    result = {"psi": name, "seed": k, "ap": scores.ap, "ap50": scores.ap50, "per_class": scores.per_class,
              "images_per_object": judge.images_per_object, "epochs": judge.epochs}
    atomic_write_json(path, result)
    return result
