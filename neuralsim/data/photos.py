"""A user's labelled real photos (one COCO file; any size and aspect ratio, several objects per photo): checked
loading, a seeded split into validation and test stratified by class, letterboxing to the detector's square working
size, and scoring of working-size detections in each photo's own pixel frame."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from neuralsim.data.boxes import xyxy_to_xywh
from neuralsim.data.coco import CocoBuilder, CocoSet, DetectionSample, load_coco
from neuralsim.errors import UserError
from neuralsim.runtime import atomic_save_png, derive_seed, file_stem, safe_name, staged_output_dir

if TYPE_CHECKING:
    from neuralsim.tasks.evaluate import EvalResult

# ----------------------------------------------------------------------------- loading

_EXIF_ORIENTATION = 0x0112


def read_photo(sample: DetectionSample) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a photo, the way up its COCO entry's size says: as a viewer shows it (EXIF orientation
    applied) unless only the stored pixels have that size. An unreadable file or another size is a `UserError`."""
    from PIL import Image, ImageOps

    try:
        with Image.open(sample.image_path) as im:
            im.load()
            shown = ImageOps.exif_transpose(im) if im.getexif().get(_EXIF_ORIENTATION, 1) != 1 else im
            if shown.size != (sample.width, sample.height) and im.size == (sample.width, sample.height):
                shown = im
            if shown.size != (sample.width, sample.height):
                raise UserError(f"Photo {sample.image_path} is {shown.width}x{shown.height} but its COCO entry says "
                                f"{sample.width}x{sample.height}.")
            return np.asarray(shown.convert("RGB")).copy()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"Photo {sample.image_path} cannot be read ({reason}).") from None


def load_photos(path: str | Path, objects: list[str]) -> CocoSet:
    """`load_coco` of the user's photos, and: every category is named after one of `objects`, no two categories
    share a name, and every photo decodes (at any size) to the size its entry gives."""
    photos = load_coco(path)
    names = photos.category_names
    unknown = [n for n in names if n not in objects]
    if unknown:
        raise UserError(f"COCO file {photos.path}: categories {', '.join(map(repr, unknown))} are not among the "
                        f"objects ({', '.join(map(repr, objects))}); name each category after one of them.")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"COCO file {photos.path}: categories {', '.join(map(repr, twice))} are named more than once.")
    for sample in photos.samples:
        read_photo(sample)
    return photos


# ----------------------------------------------------------------------------- validation / test split


def split_photos(photos: CocoSet, val_fraction: float = 0.5, seed: int = 0,
                 min_per_class: int = 2) -> tuple[list[int], list[int]]:
    """Image ids (ascending) of validation and of test: every class with boxes on both sides, and each class's
    boxes split as close to `val_fraction` as the photos allow (photos showing several classes make an exact split
    impossible); the photo count follows `val_fraction` where the boxes leave a choice.

    The photos are sorted by id and placed one by one, those showing the rarest class first (ties in a seeded
    order): each to a side lacking a class it is the last chance for, else to the side its classes are most short of.
    Single moves and swaps of photos follow while they improve the balance; the best of a few seeded starts is kept.
    A class shown in fewer than `min_per_class` photos, or one that no split found puts on both sides, is a
    `UserError`; categories without boxes are left out."""
    if not 0 < val_fraction < 1:
        raise UserError(f"The validation fraction of the photos must lie between 0 and 1, not {val_fraction}.")
    if min_per_class < 2:
        raise ValueError(f"min_per_class must be at least 2 (one photo per side), not {min_per_class}")
    samples = sorted(photos.samples, key=lambda s: s.image_id)
    names = photos.category_names
    column = {c.id: k for k, c in enumerate(photos.categories)}
    counts = np.zeros((len(samples), len(names)))  # boxes per photo and class
    for i, s in enumerate(samples):
        np.add.at(counts[i], [column[int(label)] for label in s.labels], 1)
    present = counts > 0
    per_class = present.sum(0)
    shown = per_class > 0
    if not shown.any():
        raise UserError(f"COCO file {photos.path}: the photos hold no boxes to split into validation and test.")
    for k in np.flatnonzero(shown & (per_class < min_per_class)):
        raise UserError(f"COCO file {photos.path}: class {names[k]!r} appears in only {per_class[k]} photo(s); at "
                        f"least {min_per_class} are needed to split them into validation and test.")
    rng = np.random.default_rng(derive_seed(seed, "photo-split"))
    split = _Stratifier(counts, val_fraction)
    side, cost = None, math.inf
    for _ in range(_STARTS):
        candidate = split.improve(split.greedy(rng.permutation(len(samples)), rng.random(len(samples)) < val_fraction))
        if split.cost_of(candidate) < cost - _TIE:
            side, cost = candidate, split.cost_of(candidate)
    one_sided = [names[k] for k in np.flatnonzero(shown & ((present[side].sum(0) == 0) | (present[~side].sum(0) == 0)))]
    if one_sided:
        raise UserError(f"COCO file {photos.path}: found no split of the photos that puts every class into both "
                        f"validation and test (not {', '.join(map(repr, one_sided))}); add photos showing "
                        f"{'this object' if len(one_sided) == 1 else 'these objects'} with fewer others.")
    ids = np.array([s.image_id for s in samples])
    return ids[side].tolist(), ids[~side].tolist()


_TIE = 1e-9
_STARTS = 8  # greedy starts of the split; the local search from one start alone ends in a poor split now and then
_MISSING = 1e3  # cost of a class absent from one side: above any imbalance of boxes
_PHOTOS = 1e-3  # weight of the photo-count imbalance: below any difference of box balance that matters


class _Stratifier:
    """The greedy split and its improvement for a (photos, classes) matrix of box counts; sides: True = validation."""

    def __init__(self, counts: np.ndarray, val_fraction: float):
        self.counts, self.present, self.fraction = counts, counts > 0, val_fraction
        self.total = counts.sum(0)
        self.per_class = self.present.sum(0)
        self.shown = self.total > 0
        self.norm = np.where(self.shown, self.total, 1.0)

    def greedy(self, order: np.ndarray, coin: np.ndarray) -> np.ndarray:
        """Place the photos one by one; `order` ranks the photos among equals, `coin` settles a full tie."""
        n = len(self.counts)
        want_boxes = np.stack([self.fraction * self.total, (1 - self.fraction) * self.total])  # (2 sides, classes)
        want_photos = np.array([self.fraction * n, (1 - self.fraction) * n])
        has = np.zeros((2, len(self.total)), bool)
        left = self.per_class.copy()
        rarest = np.where(self.present, self.per_class, n + 1).min(1)  # photos without boxes come last
        side = np.zeros(n, bool)
        for i in sorted(range(n), key=lambda i: (rarest[i], order[i])):
            ks = self.present[i]
            last_chance = (~has[:, ks] & (left[ks] == 1)).sum(1)
            short = (want_boxes[:, ks] / self.norm[ks]).sum(1)
            if last_chance[0] != last_chance[1]:
                s = int(last_chance[1] > last_chance[0])
            elif abs(short[0] - short[1]) > _TIE:
                s = int(short[1] > short[0])
            elif abs(want_photos[0] - want_photos[1]) > _TIE:
                s = int(want_photos[1] > want_photos[0])
            else:
                s = int(not coin[i])
            side[i] = s == 0
            want_boxes[s] -= self.counts[i]
            want_photos[s] -= 1
            has[s] |= ks
            left[ks] -= 1
        return side

    def cost(self, boxes: np.ndarray, photos_with: np.ndarray, photos: np.ndarray) -> np.ndarray:
        """Cost of validation sides with these box counts (..., classes), photo counts per class (..., classes) and
        photo counts (...): classes missing from a side, squared relative box imbalance, photo imbalance."""
        n = len(self.counts)
        missing = (((photos_with == 0) | (photos_with == self.per_class)) & self.shown).sum(-1)
        imbalance = ((((boxes - self.fraction * self.total) / self.norm) ** 2) * self.shown).sum(-1)
        return _MISSING * missing + imbalance + _PHOTOS * ((photos - self.fraction * n) / n) ** 2

    def cost_of(self, side: np.ndarray) -> float:
        return float(self.cost(self.counts[side].sum(0), self.present[side].sum(0), side.sum()))

    def improve(self, side: np.ndarray) -> np.ndarray:
        """Best single move or swap of photos between the sides while one lowers the cost (first of equals)."""
        side = side.copy()
        counts, present = self.counts, self.present.astype(float)
        for _ in range(4 * len(side) + 10):
            boxes, photos_with, photos = counts[side].sum(0), present[side].sum(0), side.sum()
            now = self.cost(boxes, photos_with, photos)
            sign = np.where(side, -1.0, 1.0)
            moves = self.cost(boxes + sign[:, None] * counts, photos_with + sign[:, None] * present, photos + sign)
            val, test = np.flatnonzero(side), np.flatnonzero(~side)
            swaps = self.cost(boxes - counts[val][:, None] + counts[test][None],
                              photos_with - present[val][:, None] + present[test][None],
                              np.full((len(val), len(test)), photos))
            move = int(np.argmin(moves))
            swap = np.unravel_index(int(np.argmin(swaps)), swaps.shape) if swaps.size else None
            if swap is not None and swaps[swap] < min(moves[move], now) - _TIE:
                side[val[swap[0]]], side[test[swap[1]]] = False, True
            elif moves[move] < now - _TIE:
                side[move] = not side[move]
            else:
                break
        return side


# ----------------------------------------------------------------------------- letterbox


@dataclass(frozen=True)
class Letterbox:
    """Where a photo (`width` x `height` pixels) lies in its square working image: working = photo * scale + pad,
    exactly (the pads need not be whole pixels)."""

    scale: float
    pad_x: float
    pad_y: float
    width: int
    height: int

    def to_working(self, boxes_xyxy) -> np.ndarray:
        """(n, 4) xyxy photo pixels → working pixels."""
        boxes = _boxes(boxes_xyxy)
        return boxes * self.scale + np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y])

    def to_photo(self, boxes_xyxy) -> np.ndarray:
        """(n, 4) xyxy working pixels → photo pixels, clipped to the photo."""
        boxes = (_boxes(boxes_xyxy) - np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y])) / self.scale
        return np.clip(boxes, 0, [self.width, self.height, self.width, self.height])


def _boxes(boxes_xyxy) -> np.ndarray:
    if isinstance(boxes_xyxy, Tensor):
        boxes_xyxy = boxes_xyxy.detach().cpu().numpy()
    return np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)


def letterbox(image: np.ndarray, size: int, fill: tuple[int, int, int] = (114, 114, 114)) -> tuple[np.ndarray, Letterbox]:
    """`image` (H, W, 3) uint8 scaled (Lanczos, antialiased) so that its longer side is `size`, centred on a
    `size` x `size` canvas of `fill`, and where it lies. The mapping is exact: working pixels that the photo covers
    only in part blend it with `fill`."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.dtype} {image.shape}")
    if size < 1:
        raise ValueError(f"size must be at least 1, not {size}")
    h, w = image.shape[:2]
    scale = size / max(w, h)
    pad_x = 0.0 if w >= h else (size - w * scale) / 2
    pad_y = 0.0 if h >= w else (size - h * scale) / 2
    geometry = Letterbox(scale, pad_x, pad_y, w, h)
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = fill
    # the whole working pixels the photo touches, and the photo region (a little beyond it, in fill) they show
    margin = math.ceil(1 / scale) + 1
    block, source, grow = [], [], []
    for pad, length in ((pad_x, w), (pad_y, h)):
        lo, hi = max(0, math.floor(pad + _TIE)), min(size, math.ceil(pad + length * scale - _TIE))
        start, stop = (lo - pad) / scale, (hi - pad) / scale
        start, stop = (max(start, 0.0) if start > -_TIE else start), (min(stop, length) if stop < length + _TIE else stop)
        extend = margin if start < 0 or stop > length else 0
        block.append((lo, hi))
        source.append((start + extend, stop + extend))
        grow.append(extend)
    padded = image
    if grow[0] or grow[1]:
        padded = np.empty((h + 2 * grow[1], w + 2 * grow[0], 3), np.uint8)
        padded[:] = fill
        padded[grow[1]:grow[1] + h, grow[0]:grow[0] + w] = image
    (x0, x1), (y0, y1) = block
    box = (source[0][0], source[1][0], source[0][1], source[1][1])
    resized = Image.fromarray(padded).resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS, box=box)
    canvas[y0:y1, x0:x1] = np.asarray(resized)
    return canvas, geometry


# ----------------------------------------------------------------------------- working sets


def write_working_set(photos: CocoSet, image_ids: list[int], size: int, out: Path, name: str, *,
                      categories: list[str] | None = None, overwrite: bool = False) -> Path:
    """The COCO set folder `out/name` (images/ and annotations.json) of the photos `image_ids`, in that order,
    letterboxed to `size` x `size`: the categories `categories` (default: the photos', in their order; the
    detector's classes follow this order), boxes mapped by the letterbox (clipped to
    the photo first; a box under 1 pixel wide or high after scaling is kept, widened to 1 pixel inside the image),
    and each image entry carrying its `letterbox`, `photo_id` and `photo_file`. Same input, same bytes."""
    folder = Path(out) / safe_name(name, "working set name")
    by_id = {s.image_id: s for s in photos.samples}
    if len(set(image_ids)) != len(image_ids) or not set(image_ids) <= by_id.keys():
        raise ValueError(f"expected distinct ids of images of {photos.path}, got {image_ids}")
    category = {c.id: c.name for c in photos.categories}
    coco = CocoBuilder(categories or photos.category_names)
    with staged_output_dir(folder, overwrite) as stage:
        for n, photo_id in enumerate(image_ids, 1):
            sample = by_id[photo_id]
            image, geometry = letterbox(read_photo(sample), size)
            stem = file_stem(sample.image_path.stem)
            file_name = f"images/{n:04d}_{stem}.png"
            atomic_save_png(stage / file_name, image)
            working_id = coco.add_image(file_name, size, size, letterbox=asdict(geometry), photo_id=sample.image_id,
                                        photo_file=_file_name(sample, photos))
            clipped = np.clip(sample.boxes_xyxy.astype(np.float64), 0, [sample.width, sample.height] * 2)
            for box, label in zip(_at_least_a_pixel(geometry.to_working(clipped), size), sample.labels):
                coco.add_annotation(working_id, category[int(label)], box)
        coco.save(stage / "annotations.json", name=name, size=size)
    return folder


def _file_name(sample: DetectionSample, photos: CocoSet) -> str:
    """The photo's `file_name` in its COCO file."""
    try:
        return sample.image_path.relative_to(photos.image_dir).as_posix()
    except ValueError:  # an absolute file name
        return sample.image_path.as_posix()


def _at_least_a_pixel(boxes: np.ndarray, size: int) -> np.ndarray:
    """xyxy boxes widened about their centre to at least 1 pixel each way, shifted back inside [0, size]."""
    boxes = boxes.copy()
    for lo, hi in ((0, 2), (1, 3)):
        extent = boxes[:, hi] - boxes[:, lo]
        thin = extent < 1
        centre = np.clip((boxes[thin, lo] + boxes[thin, hi]) / 2, 0.5, size - 0.5)
        boxes[thin, lo], boxes[thin, hi] = centre - 0.5, centre + 0.5
    return boxes


def evaluate_in_photo_frame(detections: list[dict[str, Tensor]], working: CocoSet, photos: CocoSet) -> EvalResult:
    """COCO metrics of detections on a working set (one per working image, in order: xyxy working pixels, 0-based
    labels of the working set's categories, scores), mapped back by each image's letterbox and scored against the
    original boxes of those photos, in each photo's own pixel frame."""
    from neuralsim.tasks.evaluate import coco_detections, coco_evaluate

    if len(detections) != len(working.samples):
        raise ValueError(f"{len(detections)} detections for the {len(working.samples)} images of {working.path}")
    by_id = {s.image_id: s for s in photos.samples}
    label_of = {c.name: c.id for c in working.categories}  # photo category name → working category id
    if set(photos.category_names) - set(label_of):
        raise UserError(f"COCO file {working.path}: its categories ({', '.join(map(repr, label_of))}) lack some of "
                        f"{photos.path}; write the working set from these photos again.")
    category = {c.id: c.name for c in photos.categories}
    images, annotations, mapped, photo_ids = [], [], [], []
    for sample, d in zip(working.samples, detections):
        record, photo_id = sample.extra.get("letterbox"), sample.extra.get("photo_id")
        if not isinstance(record, dict) or photo_id not in by_id:
            raise UserError(f"COCO file {working.path}: image {sample.image_path.name} has no letterbox or photo of "
                            f"{photos.path}; write the working set from these photos again.")
        geometry, photo = Letterbox(**record), by_id[photo_id]
        if (geometry.width, geometry.height) != (photo.width, photo.height) or photo_id in photo_ids:
            raise UserError(f"COCO file {working.path}: image {sample.image_path.name} does not match photo {photo_id} "
                            f"of {photos.path}; write the working set from these photos again.")
        photo_ids.append(photo_id)
        images.append({"id": photo_id, "width": photo.width, "height": photo.height,
                       "file_name": photo.image_path.name})
        for box, label in zip(photo.boxes_xyxy.tolist(), photo.labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": photo_id, "bbox": xyxy_to_xywh(box),
                                "category_id": label_of[category[label]], "iscrowd": 0})
        mapped.append({"boxes": torch.from_numpy(geometry.to_photo(d["boxes"])), "scores": d["scores"],
                       "labels": d["labels"]})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c.id, "name": c.name} for c in working.categories]}
    return coco_evaluate(gt, coco_detections(mapped, photo_ids))
