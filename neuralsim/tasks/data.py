"""Detection data for the detector: COCO sets on disk and image tensors in memory, both served as
batches of float RGB [0, 1] NCHW images with per-image targets (xyxy pixels, 0-based labels)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from neuralsim.data.coco import CocoSet, load_coco
from neuralsim.errors import UserError
from neuralsim.tasks.detector import Targets


class DetectionData(Protocol):
    """Anything the trainer and the evaluator can draw batches from."""

    category_names: list[str]
    image_ids: list[int]

    def __len__(self) -> int: ...

    def batch(self, indices: list[int]) -> tuple[Tensor, Targets]:
        """(B, 3, H, W) float RGB in [0, 1] and B targets."""
        ...


@dataclass
class TensorDetectionData:
    """Images already in memory, e.g. straight from the renderer."""

    images: Tensor  # (N, 3, H, W) float RGB in [0, 1]
    targets: Targets  # N × {"boxes": (n, 4) xyxy pixels, "labels": (n,) 0-based}
    category_names: list[str]

    def __post_init__(self) -> None:
        if len(self.targets) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.targets)} targets")
        self.image_ids = list(range(1, len(self.images) + 1))

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: list[int]) -> tuple[Tensor, Targets]:
        return self.images[indices], [self.targets[i] for i in indices]


class CocoDetectionData:
    """A validated COCO set; images are decoded once and kept as uint8. All images must share one size."""

    def __init__(self, coco: CocoSet):
        sizes = {(s.height, s.width) for s in coco.samples}
        if len(sizes) != 1:
            raise UserError(f"COCO set {coco.path} mixes image sizes {sorted(sizes)}; the detector needs one size.")
        self.coco = coco
        self.category_names = coco.category_names
        self.num_classes = coco.num_classes
        self.image_ids = [s.image_id for s in coco.samples]
        self.height, self.width = sizes.pop()
        self._cache: dict[int, Tensor] = {}

    @classmethod
    def load(cls, path: str) -> CocoDetectionData:
        return cls(load_coco(path))

    def __len__(self) -> int:
        return len(self.coco.samples)

    def image(self, i: int) -> Tensor:
        """(3, H, W) uint8 RGB of sample i."""
        if i not in self._cache:
            from PIL import Image, UnidentifiedImageError

            sample = self.coco.samples[i]
            try:
                with Image.open(sample.image_path) as im:
                    array = np.asarray(im.convert("RGB"))
            except (OSError, UnidentifiedImageError) as e:
                raise UserError(f"Image {sample.image_path} cannot be read ({e}).") from None
            if array.shape[:2] != (sample.height, sample.width):
                raise UserError(f"Image {sample.image_path} is {array.shape[1]}x{array.shape[0]} but its COCO "
                                f"entry says {sample.width}x{sample.height}.")
            self._cache[i] = torch.from_numpy(array.copy()).permute(2, 0, 1)
        return self._cache[i]

    def target(self, i: int) -> dict[str, Tensor]:
        s = self.coco.samples[i]
        boxes = torch.from_numpy(s.boxes_xyxy).float().reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, s.width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, s.height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # boxes only touching the image
        return {"boxes": boxes[keep], "labels": torch.from_numpy(s.labels).long()[keep] - 1}

    def batch(self, indices: list[int]) -> tuple[Tensor, Targets]:
        images = torch.stack([self.image(i) for i in indices]).float() / 255.0
        return images, [self.target(i) for i in indices]


def iterate_batches(data: DetectionData, batch_size: int) -> Iterator[tuple[Tensor, Targets]]:
    """The whole set in its stored order, `batch_size` images at a time."""
    for start in range(0, len(data), batch_size):
        yield data.batch(list(range(start, min(start + batch_size, len(data)))))


def to_device(images: Tensor, targets: Targets, device: torch.device, dtype: torch.dtype = torch.float32):
    """Move a batch to `device`, images and boxes as `dtype`."""
    moved = [{"boxes": t["boxes"].to(device, dtype), "labels": t["labels"].to(device)} for t in targets]
    return images.to(device, dtype), moved


def hflip(images: Tensor, targets: Targets, flip: Tensor) -> tuple[Tensor, Targets]:
    """Mirror the images where `flip` (B,) bool is set, with their boxes."""
    W = images.shape[-1]
    images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    out = []
    for t, f in zip(targets, flip.tolist()):
        boxes = t["boxes"]
        if f:
            boxes = torch.stack([W - boxes[:, 2], boxes[:, 1], W - boxes[:, 0], boxes[:, 3]], dim=1)
        out.append({"boxes": boxes, "labels": t["labels"]})
    return images, out
