"""Does learned data beat domain randomisation? The example's foreign photos, learned from the DR start, judged
against DR, tuned DR and the oracle by detectors trained from scratch with paired random numbers.

    python benchmarks/beyond_dr.py --work /tmp/bdr --ray local                       # everything, resumable
    python benchmarks/beyond_dr.py --work /tmp/bdr --psis dr oracle --budgets 30     # the headroom first
    python benchmarks/beyond_dr.py --work /tmp/bdr --report                          # tables + figure only

The target: `neuralsim examples` photos (4:3, 36° lens, 2–4 objects with occlusion, photographic backgrounds,
noise, blur, JPEG), shifted from DR's wide ranges in elevation, distance, lighting and, for two objects, azimuth.
Validation and test are separate draws (40 and 80 photos). The generating distribution (`oracle_distributions`, in
the training camera's terms) is the oracle ψ and is given to no method.

Settings (the user's choice of training backgrounds): `procedural` (none given) and `backgrounds` (a folder of
photos of the place without the objects: here the crops the photos' backgrounds come from).

ψ judged per setting: `dr` (ψ₀, uniform over the wide ranges), `tuned` (`neuralsim.learn.tuned`: distance and
elevation narrowed from the validation boxes), `oracle`, and each method learned from ψ₀ against the validation
photos with `neuralsim learn`'s defaults. A judged detector is trained from scratch for a fixed number of optimiser
steps (`--steps`, batches of 16) on `budget` images per object, with seed k's random numbers for every ψ, and
scored on the test photos in their own pixels. Each piece is a file under WORK; `--ray local` runs them as tasks.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("procedural", "backgrounds")
BASELINES = ("dr", "tuned", "oracle")
ABLATIONS = ("oracle_pose", "real")
"""`oracle_pose`: the oracle's azimuth, elevation and radius with DR's lighting (how much of the headroom is light);
`real`: photos instead of renders (`train_on_photos`)."""
METHODS = ("influence", "autosim", "nso")
BATCH = 16
REAL_PHOTOS = 120
"""Photos of a third draw of the target, the `real` reference: a detector trained on them instead of renders."""


TARGETS = {"example": {}, "sparse": {"objects_per_image": (1, 2), "max_shift": 0.15}}
"""The example's photos as `neuralsim examples make-photos` makes them (2–4 objects, up to 0.3 of the width off
centre), and a sparser draw of the same distribution (1–2 objects, up to 0.15 off centre: less hidden, less cut)."""


def photos(work: Path, target: str) -> None:
    from neuralsim.data.backgrounds import SAMPLE_PHOTOS
    from neuralsim.examples import make_example_photos

    for split, count, seed in (("val", 40, 101), ("test", 80, 202), ("train", REAL_PHOTOS, 303)):
        if not (work / f"photos-{split}").is_dir():
            make_example_photos(work / f"photos-{split}", photos=count, seed=seed, **TARGETS[target])
    folder = work / "backgrounds"
    if not folder.is_dir():
        from matplotlib import cbook
        from PIL import Image

        stage = work / "backgrounds.tmp"
        stage.mkdir(parents=True, exist_ok=True)
        for name in SAMPLE_PHOTOS:
            with cbook.get_sample_data(name) as f, Image.open(f) as im:
                rgba = im.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                Image.alpha_composite(white, rgba).convert("RGB").save(stage / f"{Path(name).stem}.png")
        stage.rename(folder)


def learn_run(work: Path, setting: str, method: str, cache: Path):
    """The `neuralsim learn` run of one setting and method (its defaults otherwise)."""
    from neuralsim.examples import EXAMPLE_OBJECTS
    from neuralsim.learn.pipeline import Learn
    from neuralsim.learn.project import project_from_plain

    data = {"objects": list(EXAMPLE_OBJECTS), "cache": str(cache),
            "photos": {"val": str(work / "photos-val" / "annotations.json"),
                       "test": str(work / "photos-test" / "annotations.json")},
            "learn": {"method": {"method": method}}}
    if setting == "backgrounds":
        data["backgrounds"] = str(work / "backgrounds")
    return Learn(project_from_plain(data, f"{setting}/{method}"), work / setting / method)


def psi_path(work: Path, setting: str, name: str) -> Path:
    if name == "dr":
        return work / setting / "influence" / "psi0.json"
    if name in ("tuned", "oracle", "oracle_pose"):
        return work / setting / f"{name}.json"
    return work / setting / name / "learn" / "psi.json"


def baselines(work: Path, setting: str, base) -> None:
    """The oracle and the tuned ψ of a setting, beside its runs."""
    import torch

    from neuralsim.bilevel.field_source import FieldSource, load_fields
    from neuralsim.data.coco import load_coco
    from neuralsim.examples import oracle_distributions
    from neuralsim.learn.tuned import calibrate, tuned_psi
    from neuralsim.runtime import atomic_write_json, derive_seed
    from neuralsim.sampling.psi import Psi

    psi0 = Psi.load(psi_path(work, setting, "dr"))
    oracle = psi_path(work, setting, "oracle")
    if not oracle.is_file():
        Psi.from_json({"objects": {o: d.to_json() for o, d in oracle_distributions().items()}}).save(oracle)
    pose = psi_path(work, setting, "oracle_pose")
    if not pose.is_file():
        data = Psi.load(oracle).to_json()
        for o in data["objects"].values():
            o["lighting"] = psi0.to_json()["objects"][next(iter(psi0.objects))]["lighting"]
        Psi.from_json(data).save(pose)
    tuned = psi_path(work, setting, "tuned")
    if not tuned.is_file():
        cfg = dataclasses.replace(base.optimize_config().source, objects_per_image=1)
        source = FieldSource(load_fields(base.fields, torch.device("cpu")), base.names, psi0.lighting_names(), cfg)
        calibration = calibrate(psi0, source, base.names, derive_seed(0, "tuned", "calibration"))
        psi, record = tuned_psi(psi0, calibration, load_coco(base.out / "photos" / "val"), base.names)
        atomic_write_json(tuned.with_name("tuned-rule.json"), {"calibration": calibration, "chosen": record})
        psi.save(tuned)


def epochs_for(steps: int, images: int) -> int:
    return max(1, math.ceil(steps * BATCH / images))


def judge_piece(work: Path, setting: str, name: str, budget: int, k: int, steps: int, cache: Path,
                fields: dict[str, str]) -> Path:
    from neuralsim.learn.judge import train_and_score
    from neuralsim.runtime import atomic_write_json
    from neuralsim.sampling.psi import Psi

    path = work / setting / "judge" / f"{name}-n{budget}-s{k}.json"
    if path.is_file():
        return path
    base = dataclasses.replace(learn_run(work, setting, "influence", cache), fields=dict(fields))
    epochs = epochs_for(steps, budget * len(base.names))
    start = time.perf_counter()
    if name == "real":
        scores = train_on_photos(base, work, k, budget * len(base.names), epochs)
    else:
        scores, _ = train_and_score(base, Psi.load(psi_path(work, setting, name)), k, budget, epochs,
                                    show_progress=False)
    atomic_write_json(path, {"setting": setting, "psi": name, "images_per_object": budget, "seed": k, **scores,
                             "epochs": epochs, "steps": steps, "seconds": round(time.perf_counter() - start, 1)})
    return path


def train_on_photos(base, work: Path, k: int, images: int, epochs: int) -> dict:
    """The `real` reference: seed k's detector trained from scratch on `images` target photos (letterboxed to the
    working size, the first of the third draw) with the judge's recipe, scored like every ψ."""
    from neuralsim.bilevel.pretrain import train_from_scratch
    from neuralsim.data.coco import load_coco
    from neuralsim.data.photos import evaluate_in_photo_frame, load_photos, write_working_set
    from neuralsim.runtime import derive_seed
    from neuralsim.tasks.data import CocoDetectionData
    from neuralsim.tasks.evaluate import predict

    if images > REAL_PHOTOS:
        raise SystemExit(f"the real reference has {REAL_PHOTOS} photos, {images} asked")
    folder = work / "real" / f"{images}-{os.getpid()}"
    photos = load_photos(work / "photos-train" / "annotations.json", base.names)
    write_working_set(photos, [s.image_id for s in photos.samples[:images]], base.project.size, folder, "train",
                      categories=base.names)
    cfg = base.optimize_config()
    model = train_from_scratch(cfg.detector, base.names, base.project.size, CocoDetectionData(load_coco(folder / "train")),
                               epochs, derive_seed(base.project.seed, "judge", "detector", k), base._device())
    shutil.rmtree(folder)
    working = load_coco(base.out / "photos" / "test")
    scores = evaluate_in_photo_frame(predict(model, CocoDetectionData(working), batch_size=cfg.batch_size), working,
                                     load_photos(base.project.photos.test, base.names))
    return {"ap": scores.ap, "ap50": scores.ap50, "per_class": scores.per_class}


def learn_piece(work: Path, setting: str, method: str, cache: Path) -> Path:
    run = learn_run(work, setting, method, cache)
    start = time.perf_counter()
    run.run(until="learn")
    seconds = work / setting / method / "learn-seconds.json"
    if not seconds.is_file():
        from neuralsim.runtime import atomic_write_json

        atomic_write_json(seconds, {"seconds": round(time.perf_counter() - start, 1)})
    return psi_path(work, setting, method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bdr"))
    parser.add_argument("--target", default="example", choices=list(TARGETS), help="which photos (one per WORK)")
    parser.add_argument("--cache", type=Path, default=None, help="captures and fields (default WORK/cache)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--psis", nargs="+", default=[*BASELINES, *METHODS])
    parser.add_argument("--budgets", nargs="+", type=int, default=[30])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps of each judged detector")
    parser.add_argument("--ray", default=None, help="local or a cluster address; default: one piece after another")
    parser.add_argument("--report", action="store_true", help="only summarise what is there")
    args = parser.parse_args()
    cache = args.cache or args.work / "cache"
    if not args.report:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        from neuralsim.distributed import make_executor

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        args.work.mkdir(parents=True, exist_ok=True)
        photos(args.work, args.target)
        with make_executor(args.ray) as executor:
            bases = {}
            for setting in args.settings:
                bases[setting] = base = learn_run(args.work, setting, "influence", cache)
                base.run(until="psi0")
                baselines(args.work, setting, base)
            learn = [(s, m) for s in args.settings for m in args.psis if m in METHODS]
            for _ in executor.map_unordered(lambda p: learn_piece(args.work, *p, cache), learn,
                                            name=lambda p: f"learn {p[0]}/{p[1]}", log=print):
                pass
            fields = {s: dict(base.fields) for s, base in bases.items()}  # plain data for the tasks
            pieces = [(s, n, b, k) for k in range(args.seeds) for b in args.budgets for s in args.settings
                      for n in args.psis]
            for piece, path in executor.map_unordered(
                    lambda p: judge_piece(args.work, *p, args.steps, cache, fields[p[0]]), pieces,
                    name=lambda p: f"judge {'/'.join(map(str, p))}", log=print):
                print(piece, json.loads(path.read_text())["ap"])
    summarise(args.work, args.target)


def summarise(work: Path, target: str) -> dict:
    """Every judged piece under WORK as tables: AP mean ± std per (setting, ψ, budget), paired gains against DR and
    tuned DR, ψ against the oracle (TV per object and factor), compute; written to
    benchmarks/results/beyond-dr-TARGET.json (and the figure to docs/figures/beyond_dr_TARGET.png)."""
    from neuralsim.sampling.psi import Psi

    rows = [json.loads(p.read_text()) for p in sorted(work.glob("*/judge/*.json"))]
    table = {}
    for r in rows:
        table.setdefault((r["setting"], r["images_per_object"]), {}).setdefault(r["psi"], {})[r["seed"]] = r
    out = {"target": target, "command": " ".join(sys.argv), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "threads_per_piece": int(os.environ.get("OMP_NUM_THREADS", "1")), "cells": [], "psi_tv": {}, "learn": {}}
    for (setting, budget), by_psi in sorted(table.items()):
        for name, seeds in by_psi.items():
            ap = np.array([100 * seeds[k]["ap"] for k in sorted(seeds)])
            cell = {"setting": setting, "images_per_object": budget, "psi": name, "seeds": len(ap),
                    "steps": sorted({seeds[k]["steps"] for k in seeds}),
                    "ap_mean": round(float(ap.mean()), 2), "ap_std": round(float(ap.std(ddof=1)), 2) if len(ap) > 1 else None,
                    "ap": [round(float(a), 2) for a in ap],
                    "ap50_mean": round(float(np.mean([100 * seeds[k]["ap50"] for k in seeds])), 2),
                    "per_class": {c: round(100 * float(np.mean([seeds[k]["per_class"][c]["ap"] for k in seeds])), 1)
                                  for c in seeds[next(iter(seeds))]["per_class"]},
                    "train_seconds": round(float(np.mean([seeds[k]["seconds"] for k in seeds])), 1)}
            for ref in ("dr", "tuned", "oracle"):
                if ref == name or ref not in by_psi:
                    continue
                common = sorted(set(seeds) & set(by_psi[ref]))
                if len(common) < 2:
                    continue
                gain = np.array([100 * (seeds[k]["ap"] - by_psi[ref][k]["ap"]) for k in common])
                cell[f"gain_vs_{ref}"] = {"mean": round(float(gain.mean()), 2),
                                          "se": round(float(gain.std(ddof=1) / math.sqrt(len(gain))), 2),
                                          "positive": f"{int((gain > 0).sum())}/{len(gain)}"}
            out["cells"].append(cell)
    for setting in SETTINGS:
        oracle = psi_path(work, setting, "oracle")
        if not oracle.is_file():
            continue
        truth = Psi.load(oracle).probabilities()
        for name in ("dr", "tuned", "oracle_pose", *METHODS):
            path = psi_path(work, setting, name)
            if not path.is_file():
                continue
            probs = Psi.load(path).probabilities()
            out["psi_tv"][f"{setting}/{name}"] = {
                o: {f: round(0.5 * float(np.abs(np.array(p) - np.array(truth[o][f])).sum()), 3) for f, p in factors.items()}
                for o, factors in probs.items()}
            seconds = work / setting / name / "learn-seconds.json"
            if seconds.is_file():
                steps = [json.loads(line) for line in (work / setting / name / "learn" / "metrics.jsonl").open()]
                out["learn"][f"{setting}/{name}"] = json.loads(seconds.read_text()) | {
                    "outer_steps": len(steps), "images_rendered": sum(r["images_rendered"] for r in steps),
                    "detector_trainings": 1 + sum(r["detector_trainings"] for r in steps),  # + the pre-training
                    "step_seconds": round(float(np.mean([r["seconds"]["total"] for r in steps])), 1)}
    result = ROOT / "benchmarks" / "results" / f"beyond-dr-{target}.json"
    result.write_text(json.dumps(out, indent=1) + "\n")
    efficiency_figure(out["cells"], ROOT / "docs" / "figures" / f"beyond_dr_{target}.png")
    for c in out["cells"]:
        gains = "  ".join(f"vs {r}: {c[f'gain_vs_{r}']['mean']:+.1f} ± {c[f'gain_vs_{r}']['se']:.1f} "
                          f"({c[f'gain_vs_{r}']['positive']})" for r in ("dr", "tuned") if f"gain_vs_{r}" in c)
        print(f"{c['setting']:11s} n={c['images_per_object']:3d} {c['psi']:9s} AP {c['ap_mean']:5.1f} ± "
              f"{c['ap_std'] or 0:4.1f} {c['ap']} AP50 {c['ap50_mean']:5.1f}  {gains}")
    return out


def efficiency_figure(cells: list[dict], path: Path) -> None:
    """AP on the test photos against training images per object, one panel per setting, one line per ψ (mean ±
    std over seeds); drawn when some ψ has two budgets or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({c["setting"] for c in cells})
    lines = {(c["setting"], c["psi"]) for c in cells}
    if not any(len({c["images_per_object"] for c in cells if (c["setting"], c["psi"]) == key}) > 1 for key in lines):
        return
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.2), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for name in sorted({psi for s, psi in lines if s == setting}):
            mine = sorted((c for c in cells if (c["setting"], c["psi"]) == (setting, name)),
                          key=lambda c: c["images_per_object"])
            ax.errorbar([c["images_per_object"] for c in mine], [c["ap_mean"] for c in mine],
                        yerr=[c["ap_std"] or 0 for c in mine], marker="o", capsize=3, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("training images per object")
        ax.set_ylabel("AP on the test photos")
        ax.set_title(setting)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
