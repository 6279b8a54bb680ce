"""House utilities: atomic writes, staged output folders, plain file names, run directories (which record the
neuralsim version that wrote them), seeding, device, progress.

Every output file is written to a temporary name and renamed; every output folder is built beside
its final place and renamed on success, so a failure never leaves anything half-written behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from neuralsim import __version__
from neuralsim.errors import UserError
from neuralsim.schema import FOREIGN, from_plain

# ----------------------------------------------------------------------------- atomic files

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions a plain open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_plain(obj: Any) -> Any:
    """Dataclasses, paths, numpy and torch values → plain JSON data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return to_plain(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps_json(obj: Any) -> str:
    return json.dumps(to_plain(obj), indent=2, sort_keys=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj))


def atomic_save_png(path: str | Path, image: np.ndarray) -> Path:
    """Save an HxW, HxWx3 or HxWx4 uint8 array as PNG, atomically and byte-reproducibly."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=False, compress_level=6)
    return atomic_write_bytes(path, buf.getvalue())


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Read JSON, turning a missing or malformed file into a `UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path} is not valid JSON ({e}).") from None


# ----------------------------------------------------------------------------- output folders

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def safe_name(name: str, what: str) -> str:
    """`name` itself if it is a plain name, safe as (part of) a file name: letters, digits, `_`, `-` and `.`, not
    starting with `.`; else a `UserError`."""
    if not _PLAIN_NAME.fullmatch(name):
        raise UserError(f"{what}: expected a plain name (letters, digits, _ - . and not starting with .), got {name!r}")
    return name


def file_stem(name: str) -> str:
    """A plain name standing for any text (an object's or a class's name) in file names: the text itself when it is
    plain, else its other characters replaced by `_` and a hash of the text appended, so that two texts never share
    a file."""
    if _PLAIN_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name).lstrip('.')[:64]}_{digest}"


def check_output_dir(out: str | Path, overwrite: bool) -> Path:
    """An output folder must be new or empty, unless `overwrite` is given."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"Output {out} exists and is not a folder.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"Output folder {out} already holds files; choose a new folder or pass --overwrite.")
    return out


@contextlib.contextmanager
def staged_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `out`, on failure it is removed."""
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    os.chmod(stage, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the folder the permissions a plain mkdir would
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(stage, out)


@dataclass
class RunRecord:
    """`neuralsim.json` of a run folder: the neuralsim that wrote it."""

    __pydantic_config__ = FOREIGN  # a later neuralsim may record more

    version: str


class RunDir:
    """A run directory: `config.json` (plain data), `neuralsim.json` (the version that wrote it), `metrics.jsonl`,
    TensorBoard events, checkpoints. Only the neuralsim version that started a run continues it: another may read its
    settings or checkpoints differently."""

    RECORD = "neuralsim.json"

    def __init__(self, path: str | Path, config: Any = None, *, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        if not resume:
            check_output_dir(self.path, overwrite)
            if overwrite and self.path.exists():
                shutil.rmtree(self.path)
        elif not (self.path / "config.json").is_file():
            raise UserError(f"Cannot resume: {self.path} holds no config.json of an earlier run.")
        else:
            self.check_version(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if not resume:
            atomic_write_json(self.path / self.RECORD, RunRecord(__version__))
            if config is not None:
                atomic_write_json(self.path / "config.json", config)
        self._tb = None

    @classmethod
    def check_version(cls, path: str | Path) -> None:
        """Refuse to continue the run in `path` unless this neuralsim version wrote it (before reading its config)."""
        record = Path(path) / cls.RECORD
        version = from_plain(RunRecord, read_json(record), str(record)).version if record.is_file() else None
        if version != __version__:
            writer = f"neuralsim {version}" if version else "a neuralsim that recorded no version"
            raise UserError(f"Cannot resume: {path} was written by {writer}, this is neuralsim {__version__}; "
                            "start the run again with --overwrite.")

    @property
    def config(self) -> Any:
        return read_json(self.path / "config.json", "Run config")

    def log(self, step: int, **scalars: Any) -> None:
        """Append one JSON line to metrics.jsonl and the numeric scalars to TensorBoard."""
        record = {"step": step, "time": time.time(), **to_plain(scalars)}
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for key, value in _flatten(scalars).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.tensorboard.add_scalar(key, value, step)
        self.tensorboard.flush()

    def metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, last_step: int) -> None:
        """Drop metric lines after `last_step` (used when resuming from a checkpoint)."""
        kept = [m for m in self.metrics() if m["step"] <= last_step]
        atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in kept))

    @property
    def tensorboard(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.path / "tensorboard"))
        return self._tb

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}/"))
    elif isinstance(d, (list, tuple)) and len(d) <= 64 and all(isinstance(v, (int, float)) for v in d):
        for i, v in enumerate(d):
            out[f"{prefix}{i}"] = v
    else:
        out[prefix.rstrip("/")] = d
    return out


# ----------------------------------------------------------------------------- seeds, device


def derive_seed(seed: int, *keys: Any) -> int:
    """A child seed for a named sub-task, stable across runs and machines (for per-object/per-image work)."""
    h = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def make_deterministic() -> None:
    """Same seed, same bytes, at any thread count: PyTorch's deterministic algorithms (on the CPU this orders the
    accumulation of `index_put_(accumulate=True)`, the backward of indexing with repeated indices, which otherwise
    adds with atomics in parallel threads), warning where an op has none. Called by every command."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's reproducible workspace, read at first use
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` → CUDA when present, else CPU; `cpu`/`cuda` as given (cuda without a GPU is an error)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto.")
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, not {device!r}.")
    return torch.device(device)


def progress(transient: bool = False) -> Progress:
    """The rich progress bar used by every long step."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=transient,
    )
