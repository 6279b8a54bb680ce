"""Tuned domain randomisation: the ranges a person would narrow by looking at the validation photos' boxes, the
baseline a learned ψ has to beat besides plain domain randomisation.

The rule, per object, from its boxes in the validation photos (letterboxed to the working size, so measured in the
pixels of a training render):

1. **Calibrate** on `CALIBRATION_RENDERS` renders of the object alone drawn from ψ₀: its box size s = √(w·h) is
   about c/r at radius r, so c = median(s·r); and per elevation bin the median box aspect h/w.
2. **Distance**: each validation box gives r̂ = c/s. The radius range becomes the 10th–90th percentile of r̂, at
   least one bin wide, inside ψ₀'s range; each radius bin gets the share of that range it covers.
3. **Elevation**: each validation box votes for the bin whose median aspect is nearest its own (in log aspect);
   every bin from the lowest to the highest with at least `MIN_VOTE` of the votes is kept, uniformly.
4. **Azimuth and lighting** stay as ψ₀: a box says nothing about them.

An object with fewer than `MIN_BOXES` validation boxes keeps ψ₀. Occluded boxes are smaller than the object, so
they push r̂ out; the percentiles keep a few of them from widening the range.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from neuralsim.data.coco import CocoSet
from neuralsim.sampling.bins import FACTORS
from neuralsim.sampling.psi import FactorPsi, Psi

CALIBRATION_RENDERS = 48
MIN_BOXES = 3
MIN_VOTE = 0.15
PERCENTILES = (10.0, 90.0)


def calibrate(psi0: Psi, render, names: list[str], seed: int, per_object: int = CALIBRATION_RENDERS) -> dict[str, dict]:
    """Per object: c (box size × radius) and the median box aspect of each elevation bin, from renders of the object
    alone (`render` places one object per image) drawn from ψ₀."""
    from neuralsim.bilevel.data import draw_training_set

    drawn = draw_training_set(psi0, {o: per_object for o in names}, render, torch.Generator().manual_seed(seed), None)
    out = {}
    for draws in drawn.draws:
        boxes = [t["boxes"] for t in drawn.targets[draws.rows]]
        kept = [i for i, b in enumerate(boxes) if len(b)]
        wh = np.array([(float(boxes[i][0, 2] - boxes[i][0, 0]), float(boxes[i][0, 3] - boxes[i][0, 1])) for i in kept])
        radius = draws.params.radius.detach().numpy()[kept]
        elevation = draws.params.elevation_deg.detach().numpy()[kept]
        size, aspect = np.sqrt(wh[:, 0] * wh[:, 1]), wh[:, 1] / wh[:, 0]
        factor = psi0.objects[draws.obj].factors["elevation"]
        edges = factor.low + factor.width * np.arange(factor.k + 1)
        which = np.clip(np.searchsorted(edges, elevation, side="right") - 1, 0, factor.k - 1)
        medians = [float(np.median(aspect[which == b])) if np.any(which == b) else math.nan for b in range(factor.k)]
        out[draws.obj] = {"c": float(np.median(size * radius)), "elevation_aspect": medians}
    return out


def tuned_psi(psi0: Psi, calibration: dict[str, dict], val: CocoSet, names: list[str]) -> tuple[Psi, dict]:
    """ψ₀ with each object's radius and elevation narrowed by the rule above from the validation boxes (working
    pixels, category ids 1.. in `names` order); returns ψ and, per object, what the rule saw and chose."""
    data = psi0.to_json()
    record = {}
    for i, name in enumerate(names):
        wh = np.array([(b[2] - b[0], b[3] - b[1]) for s in val.samples for b, label in zip(s.boxes_xyxy, s.labels)
                       if int(label) == i + 1], dtype=float).reshape(-1, 2)
        wh = wh[(wh > 0).all(axis=1)]
        if len(wh) < MIN_BOXES:
            record[name] = {"boxes": len(wh), "kept": "ψ₀ (too few boxes)"}
            continue
        cal, spec = calibration[name], data["objects"][name]
        r_hat = cal["c"] / np.sqrt(wh[:, 0] * wh[:, 1])
        radius = psi0.objects[name].factors["radius"]
        low, high = (float(v) for v in np.percentile(r_hat, PERCENTILES))
        low, high = _at_least_one_bin(low, high, radius)
        spec["radius"]["probs"] = _overlap_probs(radius, low, high).tolist()
        aspects = np.log(wh[:, 1] / wh[:, 0])
        reference = np.log(np.nan_to_num(np.array(cal["elevation_aspect"]), nan=np.inf))
        votes = np.bincount(np.argmin(np.abs(aspects[:, None] - reference[None, :]), axis=1), minlength=len(reference))
        share = votes / votes.sum()
        chosen = np.flatnonzero(share >= MIN_VOTE)
        elevation = np.zeros(len(reference))
        elevation[chosen.min():chosen.max() + 1] = 1.0
        spec["elevation"]["probs"] = (elevation / elevation.sum()).tolist()
        record[name] = {"boxes": len(wh), "c": cal["c"], "radius": [low, high], "elevation_votes": share.tolist(),
                        "elevation_bins": [int(chosen.min()), int(chosen.max())]}
    for name in names:
        for f in FACTORS:
            data["objects"][name][f].pop("logits", None)
    return Psi.from_json(data, "tuned ψ"), record


def _at_least_one_bin(low: float, high: float, factor: FactorPsi) -> tuple[float, float]:
    low, high = max(low, factor.low), min(high, factor.low + factor.width * factor.k)
    if high - low < factor.width:
        middle = min(max((low + high) / 2, factor.low + factor.width / 2), factor.low + factor.width * (factor.k - 0.5))
        low, high = middle - factor.width / 2, middle + factor.width / 2
    return low, high


def _overlap_probs(factor: FactorPsi, low: float, high: float) -> np.ndarray:
    edges = factor.low + factor.width * np.arange(factor.k + 1)
    overlap = np.clip(np.minimum(edges[1:], high) - np.maximum(edges[:-1], low), 0.0, None)
    return overlap / overlap.sum()
