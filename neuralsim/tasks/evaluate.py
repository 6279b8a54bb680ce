"""COCO box evaluation through pycocotools: AP, AP50, AP75 and per-class AP, for COCO files and for
targets/detections held as tensors; results as plain JSON data."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from neuralsim.data.boxes import xyxy_to_xywh
from neuralsim.runtime import read_json
from neuralsim.tasks.data import CocoDetectionData, DetectionData, iterate_batches
from neuralsim.tasks.detector import Detector, Targets


@dataclass
class EvalResult:
    """COCO metrics in [0, 1]; None where the set has no ground truth for it."""

    ap: float | None  # AP averaged over IoU 0.50:0.95
    ap50: float | None
    ap75: float | None
    per_class: dict[str, dict[str, float | None]]  # class name → {"ap", "ap50"}
    num_images: int
    num_detections: int


def coco_gt_from_targets(targets: Targets, image_sizes: list[tuple[int, int]], category_names: list[str],
                         image_ids: list[int] | None = None) -> dict:
    """A COCO ground-truth dict from per-image targets (xyxy pixels, 0-based labels → ids from 1)."""
    image_ids = image_ids or list(range(1, len(targets) + 1))
    images = [{"id": i, "width": int(w), "height": int(h), "file_name": f"{i}.png"}
              for i, (h, w) in zip(image_ids, image_sizes)]
    annotations = []
    for image_id, t in zip(image_ids, targets):
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            x, y, w, h = xyxy_to_xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(category_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_detections(detections: list[dict[str, Tensor]], image_ids: list[int]) -> list[dict]:
    """COCO result entries (xywh boxes, category id = label + 1) from per-image detections. The detector's label of
    a COCO set's category is its id - 1 (`CocoDetectionData`), so these are the set's own category ids."""
    results = []
    for image_id, d in zip(image_ids, detections):
        for box, score, label in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist()):
            results.append({"image_id": image_id, "category_id": int(label) + 1,
                            "bbox": xyxy_to_xywh(box), "score": float(score)})
    return results


def coco_evaluate(gt: dict, results: list[dict]) -> EvalResult:
    """Run pycocotools' box evaluation of `results` against the COCO dict `gt` (its output silenced)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = {c["id"]: c["name"] for c in gt["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {**gt, "annotations": [{"iscrowd": 0, "area": a["bbox"][2] * a["bbox"][3], **a}
                                                 for a in gt["annotations"]]}
        coco_gt.createIndex()
        if not results:  # pycocotools cannot load an empty result list: nothing found, AP 0 where there is GT
            has_gt = {a["category_id"] for a in gt["annotations"]}
            per_class = {names[c]: ({"ap": 0.0, "ap50": 0.0} if c in has_gt else {"ap": None, "ap50": None})
                         for c in sorted(names)}
            zero = 0.0 if has_gt else None
            return EvalResult(zero, zero, zero, per_class, len(gt["images"]), 0)
        E = COCOeval(coco_gt, coco_gt.loadRes([dict(r) for r in results]), "bbox")  # loadRes adds keys to each
        E.evaluate()
        E.accumulate()
        E.summarize()
    precision = E.eval["precision"]  # (T IoUs, R recalls, K classes, A areas, M maxDets); -1 = no GT
    per_class = {names[c]: {"ap": _mean_valid(precision[:, :, k, 0, -1]), "ap50": _mean_valid(precision[0, :, k, 0, -1])}
                 for k, c in enumerate(E.params.catIds)}
    ap, ap50, ap75 = (float(s) if s >= 0 else None for s in E.stats[:3])
    return EvalResult(ap, ap50, ap75, per_class, len(gt["images"]), len(results))


def _mean_valid(p: np.ndarray) -> float | None:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else None


def evaluate_tensors(targets: Targets, detections: list[dict[str, Tensor]], image_sizes: list[tuple[int, int]],
                     category_names: list[str]) -> EvalResult:
    """COCO metrics of in-memory detections against in-memory targets ((H, W) per image)."""
    gt = coco_gt_from_targets(targets, image_sizes, category_names)
    return coco_evaluate(gt, coco_detections(detections, [im["id"] for im in gt["images"]]))


@torch.no_grad()
def predict(model: Detector, data: DetectionData, *, batch_size: int = 16) -> list[dict[str, Tensor]]:
    """Detections (on the CPU) for every image of `data` in its stored order, in eval mode."""
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        out = []
        for images, _ in iterate_batches(data, batch_size):
            detections = model(images.to(param.device, param.dtype), detect=True).detections
            out += [{k: v.cpu() for k, v in d.items()} for d in detections]
    finally:
        model.train(was_training)
    return out


def predict_coco_results(model: Detector, data: DetectionData, *, batch_size: int = 16) -> list[dict]:
    """The detections of `model` on `data` as COCO results ({image_id, category_id, bbox [x, y, w, h], score}) with
    the set's own image and category ids: for a COCO set on disk, what pycocotools' `loadRes` reads against its
    file."""
    return coco_detections(predict(model, data, batch_size=batch_size), data.image_ids)


def score_coco_results(results: list[dict], data: DetectionData, *, batch_size: int = 16) -> EvalResult:
    """COCO metrics of the results on `data` (from `predict_coco_results`); a COCO set on disk is scored against
    its own file, images in memory against their targets (read `batch_size` at a time)."""
    if isinstance(data, CocoDetectionData):
        gt = read_json(data.coco.path, "COCO file")
    else:
        targets, sizes = [], []
        for images, batch_targets in iterate_batches(data, batch_size):
            targets += batch_targets
            sizes += [tuple(images.shape[-2:])] * len(batch_targets)
        gt = coco_gt_from_targets(targets, sizes, data.category_names, data.image_ids)
    return coco_evaluate(gt, results)


def evaluate_detector(model: Detector, data: DetectionData, *, batch_size: int = 16) -> EvalResult:
    """COCO metrics of `model` on `data`; a COCO set on disk is scored against its own file."""
    return score_coco_results(predict_coco_results(model, data, batch_size=batch_size), data, batch_size=batch_size)


@torch.no_grad()
def image_losses(model: Detector, data: DetectionData, batch_size: int = 16) -> Tensor:
    """(N,) detection loss of each image of `data` (eval-mode normalisation), in its stored order."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(data), batch_size):
        images, targets = data.batch(list(range(start, min(start + batch_size, len(data)))))
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        out.append(model(images.to(device), targets, detect=False).loss_per_image().cpu())
    return torch.cat(out)


def loss_by_class(losses: Tensor, data: DetectionData, names: list[str]) -> dict[str, float | None]:
    """The mean loss over the images showing each class (an image showing several counts for each); None for a
    class the set does not show."""
    shown = [set(data.target(j)["labels"].tolist()) for j in range(len(data))]
    per_class = {}
    for c, name in enumerate(names):
        rows = [j for j, labels in enumerate(shown) if c in labels]
        per_class[name] = float(losses[rows].mean()) if rows else None
    return per_class
