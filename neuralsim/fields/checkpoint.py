"""Field checkpoints: `field.safetensors` (tensors) beside `field.json` (plain config with a format version).

Loading a checkpoint written by another format version, or a damaged one, is a `UserError`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from neuralsim.errors import UserError
from neuralsim.fields.base import Field
from neuralsim.fields.grid import GridField, GridFieldConfig
from neuralsim.runtime import atomic_write_bytes, atomic_write_json, read_json

FORMAT = "neuralsim-field"
FORMAT_VERSION = 1
FIELD_KINDS: dict[str, tuple[type[Field], type]] = {"grid": (GridField, GridFieldConfig)}
TENSORS_FILE, CONFIG_FILE = "field.safetensors", "field.json"


def save_field(field: GridField, directory: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the field's tensors and config (atomically, tensors first) into `directory`."""
    from safetensors.torch import save

    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in field.state_dict().items()}
    atomic_write_bytes(directory / TENSORS_FILE, save(state))
    atomic_write_json(directory / CONFIG_FILE, {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": field.kind,
        "config": dataclasses.asdict(field.config),
        "num_images": int(field.appearance.embeddings.shape[0]),
        "appearance_names": field.appearance.names,
        "meta": meta or {},
    })
    return directory


def field_info(directory: str | Path) -> dict[str, Any]:
    """The checked `field.json` of a field folder."""
    path = Path(directory) / CONFIG_FILE
    info = read_json(path, "Field config")
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise UserError(f"{path} is not a neuralsim field config (expected \"format\": \"{FORMAT}\").")
    if info.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has field format version {info.get('format_version')!r}, but this neuralsim reads "
                        f"version {FORMAT_VERSION}; fit the field again with this version.")
    if info.get("kind") not in FIELD_KINDS:
        raise UserError(f"{path} names field kind {info.get('kind')!r}; known kinds: {', '.join(FIELD_KINDS)}.")
    return info


def load_field(directory: str | Path, device: str | torch.device = "cpu") -> Field:
    """Load a fitted field (eval mode, parameters frozen) from a folder written by `neuralsim fit`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    info = field_info(directory)
    field_type, config_type = FIELD_KINDS[info["kind"]]
    try:
        config = config_type(**info["config"])
        names = list(info["appearance_names"])
        field = field_type(config, torch.zeros(int(info["num_images"]), dtype=torch.long), len(names),
                           appearance_names=names)
    except (TypeError, KeyError, ValueError) as e:
        raise UserError(f"{directory / CONFIG_FILE} has an invalid field config ({e}).") from None
    path = directory / TENSORS_FILE
    if not path.is_file():
        raise UserError(f"Field tensors {path} are missing.")
    try:
        field.load_state_dict(load_file(str(path)))
    except (SafetensorError, RuntimeError) as e:
        raise UserError(f"Field tensors {path} do not match {CONFIG_FILE} ({str(e).splitlines()[0]}).") from None
    field.requires_grad_(False)
    return field.eval().to(device)
