"""Substitution: does a radiance field stand in for the ground-truth renderer as a source of training data?

One set of placements (object, pose, zoom, lighting, shift, background) is rendered twice: by the path tracer
of the target domain (`make_scene_set`) and by each object's fitted field, composited over the very same
background and labelled from the field's own alpha. Detectors trained from scratch on each, with the same seed
and budget, are scored on one ground-truth test set. The paper's claim is that the two come out close. Each
(source, seed) training is a plain function of its inputs, so the cells can be spread over workers.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from neuralsim.assets.scenes import SceneSetConfig, draw_placements
from neuralsim.bilevel.field_source import load_fields
from neuralsim.bilevel.pretrain import train_from_scratch
from neuralsim.color import linear_to_srgb
from neuralsim.data.backgrounds import background_source
from neuralsim.experiments.cache import cache_root, ensure_scene_set
from neuralsim.experiments.gaps import initial_distributions
from neuralsim.experiments.prepare import prepare
from neuralsim.experiments.recipes import BenchConfig
from neuralsim.fields.base import Field
from neuralsim.render import Placement, composite, labels_from_alpha, render_scene
from neuralsim.runtime import atomic_write_json, atomic_write_text, derive_seed, resolve_device
from neuralsim.tasks.data import CocoDetectionData, DetectionData, TensorDetectionData
from neuralsim.tasks.evaluate import evaluate_detector

SOURCES = ("ground_truth", "field")


def scene_sets(bench: BenchConfig, per_object: int) -> tuple[SceneSetConfig, SceneSetConfig]:
    """The training placements and the test set: every object uniform over the gap's base ranges."""
    uniform = initial_distributions(bench.gap_spec, "uniform")
    common = dict(objects=list(bench.objects), size=bench.size, distributions=uniform, spp=bench.target_spp)
    train = SceneSetConfig(images=per_object * len(bench.objects), name="substitution-train", **common)
    test = SceneSetConfig(images=bench.test_per_object * len(bench.objects), name="substitution-test", **common)
    return train, test


@torch.no_grad()
def field_twin(cfg: SceneSetConfig, fields: dict[str, Field]) -> TensorDetectionData:
    """The images of scene set `cfg` rendered by the fields instead: same placements, same backgrounds."""
    background = background_source(cfg.backgrounds)
    images, targets = [], []
    for i in range(cfg.images):
        placements = draw_placements(cfg, i)
        if len(placements) != 1:
            raise ValueError("field_twin renders one object per image")
        p = placements[0]
        field = fields[p.object]
        like = next(field.parameters())
        weights = like.new_zeros(field.appearance.num_appearances)
        weights[field.appearance.names.index(p.lighting)] = 1.0
        out = render_scene([Placement(field, p.azimuth_deg, p.elevation_deg, p.radius, weights, p.shift_xy)],
                           cfg.size, cfg.fov_deg)
        bg_rng = np.random.default_rng(derive_seed(cfg.seed, cfg.name, "background", i))
        bg = torch.from_numpy(linear_to_srgb(background(bg_rng, cfg.size, cfg.size))).to(like)
        images.append(composite(out.rgb, out.alpha, bg).clamp(0, 1).permute(2, 0, 1).to(device="cpu", dtype=torch.float32))
        label = labels_from_alpha(out.object_alpha, cfg.box_threshold, cfg.min_box_pixels)[0]
        boxes = torch.zeros(0, 4) if label.box_xyxy is None else torch.tensor(label.box_xyxy, dtype=torch.float32)[None]
        targets.append({"boxes": boxes, "labels": torch.full((len(boxes),), cfg.objects.index(p.object))})
    return TensorDetectionData(torch.stack(images), targets, list(cfg.objects))


def label_agreement(truth: CocoDetectionData, twin: TensorDetectionData) -> float:
    """Mean IoU between each ground-truth box and its field twin's box (0 where only one of them has a box)."""
    from torchvision.ops import box_iou

    ious = []
    for i in range(len(truth)):
        a, b = truth.target(i)["boxes"], twin.targets[i]["boxes"]
        if len(a) or len(b):
            ious.append(float(box_iou(a, b).max()) if len(a) and len(b) else 0.0)
    return statistics.mean(ious) if ious else 0.0


def train_and_score(bench: BenchConfig, train: DetectionData, test: CocoDetectionData, seed: int, epochs: int) -> dict:
    """A detector trained from scratch on `train` (every parameter, `epochs` epochs), scored on `test`."""
    names = list(bench.objects)
    model = train_from_scratch(bench.optimize.detector, names, bench.size, train, epochs, seed, resolve_device(bench.device))
    result = evaluate_detector(model, test)
    return {"ap": result.ap, "ap50": result.ap50,
            "per_class": {o: result.per_class[o]["ap"] if result.per_class[o]["ap"] is not None else float("nan")
                          for o in names}}


def run_substitution(bench: BenchConfig, out: str | Path, per_object: int = 80, epochs: int = 30,
                     seeds: tuple[int, ...] = (0,), log=print) -> dict:
    """Train on ground-truth renders and on their field twins, score both on one test set; write result.json
    and summary.md into `out`."""
    bench = dataclasses.replace(bench, inits=[])  # no pre-trained detector needed
    bench.validate()
    prepared = prepare(bench, log=log)
    root = cache_root(bench.cache)
    train_cfg, test_cfg = scene_sets(bench, per_object)
    log(f"ground-truth training set: {per_object} images per object")
    data = {"ground_truth": CocoDetectionData.load(str(ensure_scene_set(root, train_cfg)))}
    log("the same placements rendered by the fields")
    data["field"] = field_twin(train_cfg, load_fields(prepared.fields, resolve_device(bench.device)))
    log(f"ground-truth test set: {bench.test_per_object} images per object")
    test = CocoDetectionData.load(str(ensure_scene_set(root, test_cfg)))
    iou = label_agreement(data["ground_truth"], data["field"])
    log(f"boxes of the field twins against the ground truth's: mean IoU {iou:.3f}")
    runs = []
    for seed in seeds:
        for source in SOURCES:
            tick = time.perf_counter()
            row = {"source": source, "seed": seed, **train_and_score(bench, data[source], test, seed, epochs),
                   "seconds": time.perf_counter() - tick}
            log(f"{source}, seed {seed}: AP {100 * row['ap']:.1f}, AP50 {100 * row['ap50']:.1f}")
            runs.append(row)
    summary = {source: {key: statistics.mean(r[key] for r in runs if r["source"] == source) for key in ("ap", "ap50")}
               for source in SOURCES}
    result = {"objects": list(bench.objects), "size": bench.size, "per_object": per_object, "epochs": epochs,
              "test_per_object": bench.test_per_object, "seeds": list(seeds), "box_iou": iou, "runs": runs, "summary": summary,
              "gap_ap": summary["ground_truth"]["ap"] - summary["field"]["ap"]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "result.json", result)
    atomic_write_text(out / "summary.md", summary_table(result))
    return result


def summary_table(result: dict) -> str:
    """Markdown: AP and AP50 per training source (mean over seeds), and per-class AP."""
    objects = result["objects"]
    lines = ["| training images | AP | AP50 | " + " | ".join(objects) + " |",
             "|---|---|---|" + "---|" * len(objects)]
    for source in SOURCES:
        rows = [r for r in result["runs"] if r["source"] == source]
        per_class = [100 * statistics.mean(r["per_class"][o] for r in rows) for o in objects]
        s = result["summary"][source]
        lines.append(f"| {source.replace('_', ' ')} | {100 * s['ap']:.1f} | {100 * s['ap50']:.1f} | "
                     + " | ".join(f"{v:.1f}" for v in per_class) + " |")
    return "\n".join(lines) + "\n"
