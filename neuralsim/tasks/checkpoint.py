"""Detector checkpoints: weights as `model.safetensors` and the `DetectorConfig` as `detector.json`,
both written atomically into a model folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from neuralsim.errors import UserError
from neuralsim.runtime import atomic_write_bytes, atomic_write_json, read_json
from neuralsim.tasks.detector import Detector, DetectorConfig, build_from_config

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "detector.json"


def save_detector(model: Detector, directory: str | Path) -> Path:
    """Write the weights and config of `model` into `directory`; returns the folder."""
    from safetensors.torch import save

    directory = Path(directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / WEIGHTS_FILE, save(state))
    atomic_write_json(directory / CONFIG_FILE, model.config)
    return directory


def load_detector(directory: str | Path, device: torch.device | str = "cpu") -> Detector:
    """The detector saved in `directory` by `save_detector`, on `device`."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).is_file():
        raise UserError(f"Model folder {directory} holds no {WEIGHTS_FILE}; train one with `neuralsim train`.")
    raw = read_json(directory / CONFIG_FILE, "Detector config")
    known = {f.name for f in dataclasses.fields(DetectorConfig)}
    if not isinstance(raw, dict) or not set(raw) <= known:
        raise UserError(f"Detector config {directory / CONFIG_FILE} must be an object with the fields of DetectorConfig.")
    model = build_from_config(DetectorConfig(**raw))
    try:
        model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    except RuntimeError as e:
        raise UserError(f"Weights in {directory / WEIGHTS_FILE} do not fit its detector.json "
                        f"({str(e).splitlines()[0]}).") from None
    return model.to(device)
