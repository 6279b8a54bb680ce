"""COCO detection sets: a writer (images + annotations with boxes, masks and render parameters) and a
validating reader (`CocoFile`) that turns every malformed input into one clear `UserError`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic

from neuralsim.data.boxes import xywh_to_xyxy, xyxy_to_xywh
from neuralsim.runtime import atomic_write_json, read_json
from neuralsim.schema import FOREIGN, Invalid, from_plain, problem


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
    categories: list[CocoCategory]
    samples: list[DetectionSample]

    @property
    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def num_classes(self) -> int:
        return max(c.id for c in self.categories)


# ----------------------------------------------------------------------------- the file form

BOX_TOLERANCE = 0.5  # pixels a box may reach past its image (rounding of the writer)


@dataclass
class CocoImage:
    id: int
    file_name: str
    width: Annotated[int, pydantic.Field(gt=0)]
    height: Annotated[int, pydantic.Field(gt=0)]


@dataclass
class CocoAnnotation:
    image_id: int
    category_id: int
    bbox: tuple[float, float, float, float]
    """x, y, width, height in pixels."""
    id: int | None = None

    def __post_init__(self):
        if self.bbox[2] <= 0 or self.bbox[3] <= 0:
            raise Invalid("bbox", "[x, y, width, height] with width and height > 0", list(self.bbox))


@dataclass
class CocoCategory:
    id: Annotated[int, pydantic.Field(ge=1)]
    name: str


@dataclass
class CocoFile:
    """What neuralsim reads of a COCO detection file; every annotation refers to an image and a category and its box
    lies inside its image."""

    __pydantic_config__ = FOREIGN

    images: Annotated[list[CocoImage], pydantic.Field(min_length=1)]
    annotations: list[CocoAnnotation]
    categories: Annotated[list[CocoCategory], pydantic.Field(min_length=1)]

    def __post_init__(self):
        images = _unique_ids("images", self.images)
        categories = _unique_ids("categories", self.categories)
        for i, ann in enumerate(self.annotations):
            if ann.image_id not in images:
                raise Invalid(("annotations", i, "image_id"), "the id of an image", ann.image_id)
            if ann.category_id not in categories:
                raise Invalid(("annotations", i, "category_id"), f"a category id ({', '.join(map(str, categories))})",
                              ann.category_id)
            im, (x, y, w, h) = images[ann.image_id], ann.bbox
            if min(x, y) < -BOX_TOLERANCE or x + w > im.width + BOX_TOLERANCE or y + h > im.height + BOX_TOLERANCE:
                raise Invalid(("annotations", i, "bbox"), f"a box inside its {im.width}x{im.height} image "
                                                          f"{im.file_name}", list(ann.bbox))


def _unique_ids(key: str, entries: list) -> dict[int, Any]:
    by_id = {}
    for i, entry in enumerate(entries):
        if entry.id in by_id:
            raise Invalid((key, i, "id"), f"an id no other entry of {key} has", entry.id)
        by_id[entry.id] = entry
    return by_id


def find_coco_file(path: str | Path) -> Path:
    """A COCO set is a JSON file or a folder holding `annotations.json`."""
    path = Path(path)
    return path / "annotations.json" if path.is_dir() else path


def load_coco(path: str | Path, image_dir: str | Path | None = None, check_images: bool = True) -> CocoSet:
    """Read and validate a COCO detection file: categories, boxes inside their image, images present."""
    path = find_coco_file(path)
    what = f"COCO file {path}"
    data = read_json(path, "COCO file")
    spec = from_plain(CocoFile, data, what)
    image_dir = Path(image_dir) if image_dir is not None else path.parent
    per_image: dict[int, list[CocoAnnotation]] = {im.id: [] for im in spec.images}
    for ann in spec.annotations:
        per_image[ann.image_id].append(ann)
    samples = []
    for i, (im, raw) in enumerate(zip(spec.images, data["images"])):
        p = image_dir / im.file_name
        if check_images and not p.is_file():
            raise problem(what, ("images", i, "file_name"), f"an image file that exists (in {image_dir})", im.file_name)
        anns = per_image[im.id]
        boxes = np.array([xywh_to_xyxy(a.bbox) for a in anns], dtype=np.float32).reshape(-1, 4)
        labels = np.array([a.category_id for a in anns], dtype=np.int64)
        extra = {k: v for k, v in raw.items() if k not in ("id", "file_name", "width", "height")}
        samples.append(DetectionSample(p, im.width, im.height, boxes, labels, im.id, extra))
    return CocoSet(path, image_dir, sorted(spec.categories, key=lambda c: c.id), samples)
