"""COCO detection sets: a writer (images + annotations with boxes, masks and render parameters) and a
validating reader that turns every malformed input into one clear `UserError`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neuralsim.data.boxes import xywh_to_xyxy, xyxy_to_xywh
from neuralsim.errors import UserError
from neuralsim.runtime import atomic_write_json, read_json


class CocoBuilder:
    """Collects images and annotations; category ids start at 1 in the order of `category_names`."""

    def __init__(self, category_names: list[str]):
        self.categories = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(category_names)]
        self.category_id = {n: i + 1 for i, n in enumerate(category_names)}
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add_image(self, file_name: str, width: int, height: int, **extra: Any) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": width, "height": height, **extra})
        return image_id

    def add_annotation(self, image_id: int, category: str, box_xyxy, mask: np.ndarray | None = None, **extra: Any) -> int:
        ann_id = len(self.annotations) + 1
        x, y, w, h = xyxy_to_xywh(box_xyxy)
        ann = {"id": ann_id, "image_id": image_id, "category_id": self.category_id[category],
               "bbox": [x, y, w, h], "area": float(w * h), "iscrowd": 0, **extra}
        if mask is not None:
            from pycocotools import mask as mask_utils

            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            ann["segmentation"] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
            ann["area"] = float(mask.sum())
        self.annotations.append(ann)
        return ann_id

    def to_dict(self, **info: Any) -> dict:
        return {"info": {"description": "neuralsim", **info}, "images": self.images,
                "annotations": self.annotations, "categories": self.categories}

    def save(self, path: str | Path, **info: Any) -> Path:
        return atomic_write_json(path, self.to_dict(**info))


@dataclass
class DetectionSample:
    image_path: Path
    width: int
    height: int
    boxes_xyxy: np.ndarray  # (n, 4) float pixels
    labels: np.ndarray  # (n,) int, COCO category ids (≥ 1)
    image_id: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CocoSet:
    path: Path
    image_dir: Path
    categories: list[dict]
    samples: list[DetectionSample]

    @property
    def category_names(self) -> list[str]:
        return [c["name"] for c in self.categories]

    @property
    def num_classes(self) -> int:
        return max(c["id"] for c in self.categories)


def find_coco_file(path: str | Path) -> Path:
    """A COCO set is a JSON file or a folder holding `annotations.json`."""
    path = Path(path)
    return path / "annotations.json" if path.is_dir() else path


def load_coco(path: str | Path, image_dir: str | Path | None = None, check_images: bool = True) -> CocoSet:
    """Read and validate a COCO detection file: categories, boxes inside their image, images present."""
    path = find_coco_file(path)
    data = read_json(path, "COCO file")
    image_dir = Path(image_dir) if image_dir is not None else path.parent
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UserError(f"COCO file {path} lacks a '{key}' list.")
    if not data["images"]:
        raise UserError(f"COCO file {path} holds no images; a dataset must not be empty.")
    categories = data["categories"]
    cat_ids = {c.get("id") for c in categories}
    if not categories or any(not isinstance(i, int) or i < 1 for i in cat_ids):
        raise UserError(f"COCO file {path} must list categories with integer ids starting at 1.")
    images = {}
    for im in data["images"]:
        if not all(k in im for k in ("id", "file_name", "width", "height")):
            raise UserError(f"COCO file {path}: an image entry lacks id, file_name, width or height.")
        images[im["id"]] = im
    per_image: dict[int, list[dict]] = {i: [] for i in images}
    for ann in data["annotations"]:
        if ann.get("image_id") not in images:
            raise UserError(f"COCO file {path}: annotation {ann.get('id')} refers to unknown image id {ann.get('image_id')}.")
        if ann.get("category_id") not in cat_ids:
            raise UserError(f"COCO file {path}: annotation {ann.get('id')} has unknown category id "
                            f"{ann.get('category_id')} (known: {sorted(cat_ids)}).")
        im = images[ann["image_id"]]
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(np.isfinite(bbox)):
            raise UserError(f"COCO file {path}: annotation {ann.get('id')} has a malformed bbox {bbox!r}.")
        x1, y1, x2, y2 = xywh_to_xyxy(bbox)
        tol = 0.5
        if bbox[2] <= 0 or bbox[3] <= 0 or x1 < -tol or y1 < -tol or x2 > im["width"] + tol or y2 > im["height"] + tol:
            raise UserError(f"COCO file {path}: annotation {ann.get('id')} has box {bbox} outside its "
                            f"{im['width']}x{im['height']} image {im['file_name']}.")
        per_image[ann["image_id"]].append(ann)
    samples = []
    for image_id, im in images.items():
        anns = per_image[image_id]
        p = image_dir / im["file_name"]
        if check_images and not p.is_file():
            raise UserError(f"Image {p} named in COCO file {path} is missing.")
        boxes = np.array([xywh_to_xyxy(a["bbox"]) for a in anns], dtype=np.float32).reshape(-1, 4)
        labels = np.array([a["category_id"] for a in anns], dtype=np.int64)
        extra = {k: v for k, v in im.items() if k not in ("id", "file_name", "width", "height")}
        samples.append(DetectionSample(p, int(im["width"]), int(im["height"]), boxes, labels, image_id, extra))
    return CocoSet(path, image_dir, sorted(categories, key=lambda c: c["id"]), samples)
