"""Detectors trained from scratch on field renders drawn from a ψ: the pre-training on ψ₀ every optimize run and
bench starts from, and the retraining that judges a learned ψ."""

from __future__ import annotations

import dataclasses

import torch

from neuralsim.bilevel.data import Render, draw_training_set
from neuralsim.sampling.psi import Psi
from neuralsim.tasks.data import TensorDetectionData
from neuralsim.tasks.detector import Detector, DetectorConfig, build_from_config
from neuralsim.tasks.train import TrainConfig, train_detector


def train_from_scratch(config: DetectorConfig, names: list[str], size: int, data, epochs: int, seed: int,
                       device: torch.device, show_progress: bool = False) -> Detector:
    """A detector of `config` for classes `names` on `size` px images, built from seed `seed` and trained on `data`
    (every parameter, the default learning rate, batches of 16)."""
    config = dataclasses.replace(config, num_classes=len(names), category_names=list(names), image_size=size)
    model = build_from_config(config, seed=seed).to(device)
    train_detector(model, data, TrainConfig(epochs=epochs, trainable="all", batch_size=16, seed=seed),
                   show_progress=show_progress)
    return model


def train_on_psi(config: DetectorConfig, psi: Psi, render: Render, names: list[str], size: int, per_object: int,
                 epochs: int, seed: int, draw_seed: int, device: torch.device, show_progress: bool = False) -> Detector:
    """`train_from_scratch` on `per_object` renders per object drawn discretely from ψ with the generator of
    `draw_seed`: two ψ under one `draw_seed` share every random number and differ only where ψ does."""
    train = draw_training_set(psi, {o: per_object for o in names}, render, torch.Generator().manual_seed(draw_seed), None)
    data = TensorDetectionData(train.images, train.targets, list(names))
    return train_from_scratch(config, names, size, data, epochs, seed, device, show_progress)
