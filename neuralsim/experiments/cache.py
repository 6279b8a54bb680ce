"""A content-addressed cache of captures, fields and scene sets, so experiments make each once.

Each entry is a folder named after what it holds and a hash of the exact configuration that made it;
entries are built in staged output folders, so a folder that exists is complete. Every `ensure_*`
is a plain function of its inputs and outputs on disk, ready to be farmed out (e.g. to Ray tasks).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neuralsim.runtime import staged_output_dir, to_plain


def cache_root(path: str | Path | None = None) -> Path:
    """`path`, else $NEURALSIM_CACHE, else ~/.cache/neuralsim."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("NEURALSIM_CACHE", Path.home() / ".cache" / "neuralsim"))


def config_key(config: Any) -> str:
    blob = json.dumps(to_plain(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def cached(root: Path, kind: str, name: str, config: Any, build: Callable[[Path], Any]) -> Path:
    """The entry `root/kind/name-<hash(config)>`, built by `build(folder)` when it does not exist yet, in a staged
    folder renamed into place when `build` returns: an interrupted build (a fit stopped midway) leaves no entry."""
    path = Path(root) / kind / f"{name}-{config_key(config)}"
    if not path.exists():
        with staged_output_dir(path) as stage:
            build(stage)
    return path


def ensure_capture(root: Path, obj: str, cfg) -> Path:
    """A Mitsuba capture of `obj` (a built-in name or mesh path) under `CaptureConfig` `cfg`."""
    from neuralsim.assets.capture import capture

    return cached(root, "captures", Path(obj).stem, {"object": obj, "config": cfg}, lambda out: capture(obj, out, cfg))


def ensure_scene_set(root: Path, cfg) -> Path:
    """A labelled ground-truth scene set under `SceneSetConfig` `cfg`."""
    from neuralsim.assets.scenes import make_scene_set

    return cached(root, "scenes", cfg.name, cfg.record(), lambda out: make_scene_set(cfg, out))


def ensure_field(root: Path, capture_dir: Path, cfg, device: str = "cpu", show_progress: bool = False) -> Path:
    """A radiance field fitted to `capture_dir` under `FitConfig` `cfg`."""
    import torch

    from neuralsim.fit.trainer import fit

    return cached(root, "fields", Path(capture_dir).name, {"capture": str(capture_dir), "config": cfg},
                  lambda out: fit(capture_dir, out, cfg, device=torch.device(device), show_progress=show_progress))
