"""Tiny detection fixtures made in code: a COCO set of coloured rectangles and discs on noise, and a
small RetinaNet (ResNet-18 body, 16-channel pyramid) that runs in milliseconds at 32 px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neuralsim.data.coco import CocoBuilder
from neuralsim.runtime import atomic_save_png
from neuralsim.tasks.detector import Detector, build_detector

CLASSES = ["red_box", "blue_disc"]


def make_shapes_set(root: Path, n: int = 8, size: int = 32, seed: int = 0) -> Path:
    """`n` noise images with one or two shapes each: red rectangles (class 1) and blue discs (class 2)."""
    rng = np.random.default_rng(seed)
    coco = CocoBuilder(CLASSES)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image = rng.integers(60, 160, (size, size, 3), dtype=np.uint8)
        image_id = coco.add_image(f"images/{i:03d}.png", size, size)
        for _ in range(rng.integers(1, 3)):
            w, h = rng.integers(size // 4, size // 2, 2)
            x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)
            if rng.random() < 0.5:
                image[y0 : y0 + h, x0 : x0 + w] = (230, 30, 30)
                mask = (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
                category = "red_box"
            else:
                r = min(w, h) / 2
                mask = (xx + 0.5 - x0 - r) ** 2 + (yy + 0.5 - y0 - r) ** 2 <= r**2
                image[mask] = (30, 30, 230)
                category = "blue_disc"
            ys, xs = np.nonzero(mask)
            coco.add_annotation(image_id, category, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        atomic_save_png(root / f"images/{i:03d}.png", image)
    coco.save(root / "annotations.json")
    return root


def tiny_detector(seed: int = 0, **kw) -> Detector:
    options = {"image_size": 32, "fpn_channels": 16, "category_names": CLASSES, **kw}
    return build_detector(options.pop("backbone", "resnet18"), len(CLASSES), seed=seed, **options)


def tiny_batch(dtype: torch.dtype = torch.float32, seed: int = 0):
    """Two 32 px images (N, 3, 32, 32) in [0, 1] and their targets (one and two boxes)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(2, 3, 32, 32, generator=g, dtype=dtype)
    targets = [{"boxes": torch.tensor([[4.0, 5, 20, 24]], dtype=dtype), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 2, 30, 14], [1, 1, 9, 12]], dtype=dtype), "labels": torch.tensor([0, 1])}]
    return images, targets



@pytest.fixture
def shapes_set(tmp_path: Path) -> Path:
    return make_shapes_set(tmp_path / "shapes")


@pytest.fixture(scope="session")
def make_shapes():
    return make_shapes_set


@pytest.fixture(scope="session")
def make_detector():
    return tiny_detector


@pytest.fixture(scope="session")
def make_batch():
    return tiny_batch
