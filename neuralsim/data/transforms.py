"""Posed multi-view captures in the nerfstudio / instant-ngp `transforms.json` format (DESIGN.md §4).

Intrinsics `fl_x, fl_y, cx, cy, w, h` (or instant-ngp's `camera_angle_x`), `frames` with `file_path`
and an OpenGL camera-to-world `transform_matrix`, RGBA images (alpha = object mask) or RGB with a
`mask_path`. neuralsim adds an optional per-frame `appearance_id` (lighting condition), the split
lists `train_filenames` / `val_filenames` / `test_filenames`, and a top-level `neuralsim` block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic

from neuralsim.cameras import Intrinsics, is_rigid
from neuralsim.errors import UserError
from neuralsim.runtime import atomic_write_json, read_json
from neuralsim.schema import FOREIGN, Invalid, from_plain, problem

SPLITS = ("train", "val", "test")


@dataclass
class Frame:
    file_path: str
    c2w: np.ndarray  # (4, 4) float64, OpenGL camera-to-world
    appearance_id: int = 0
    mask_path: str | None = None


@dataclass
class Capture:
    root: Path
    intrinsics: Intrinsics
    frames: list[Frame]
    splits: dict[str, list[int]]  # split name → frame indices
    appearance_names: list[str] = field(default_factory=lambda: ["default"])
    meta: dict[str, Any] = field(default_factory=dict)  # the `neuralsim` block

    @property
    def num_appearances(self) -> int:
        return len(self.appearance_names)

    def frames_of(self, split: str) -> list[Frame]:
        return [self.frames[i] for i in self.splits[split]]

    def image_path(self, frame: Frame) -> Path:
        return self.root / frame.file_path

    def load_rgba(self, frame: Frame) -> np.ndarray:
        """Float32 (H, W, 4) with straight (non-premultiplied) RGB in [0, 1] and alpha in [0, 1]."""
        return load_rgba(self.image_path(frame), None if frame.mask_path is None else self.root / frame.mask_path,
                         (self.intrinsics.height, self.intrinsics.width))


def load_rgba(image_path: Path, mask_path: Path | None, size_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image_path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im.convert("RGBA" if mode in ("RGBA", "LA", "PA") or "transparency" in im.info else "RGB"))
    except FileNotFoundError:
        raise UserError(f"Capture image {image_path} is missing.") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"Capture image {image_path} cannot be read ({e}).") from None
    if arr.shape[:2] != tuple(size_hw):
        raise UserError(
            f"Capture image {image_path} is {arr.shape[1]}x{arr.shape[0]} but the capture says {size_hw[1]}x{size_hw[0]}; "
            "all images of a capture must have the same size."
        )
    rgba = np.empty((*arr.shape[:2], 4), np.float32)
    rgba[..., :3] = arr[..., :3] / 255.0
    if mask_path is not None:
        try:
            with Image.open(mask_path) as m:
                mask = np.asarray(m.convert("L"), dtype=np.float32) / 255.0
        except FileNotFoundError:
            raise UserError(f"Mask {mask_path} is missing.") from None
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"Mask {mask_path} cannot be read ({e}).") from None
        if mask.shape != tuple(size_hw):
            raise UserError(f"Mask {mask_path} has size {mask.shape[1]}x{mask.shape[0]}, not that of its image.")
        rgba[..., 3] = mask
    elif arr.shape[-1] == 4:
        rgba[..., 3] = arr[..., 3] / 255.0
    else:
        raise UserError(
            f"Capture image {image_path} has no alpha channel and its frame names no mask_path; "
            "neuralsim needs the object mask (RGBA images or mask files)."
        )
    return rgba


DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
PositiveNumber = Annotated[float, pydantic.Field(gt=0)]
PositiveInt = Annotated[int, pydantic.Field(gt=0)]


def _c2w(rows: list[list[float]]) -> np.ndarray | None:
    """The 4x4 camera-to-world matrix of 4x4 or 3x4 rows, or None when they are no rigid transform."""
    try:
        m = np.asarray(rows, dtype=np.float64)
    except ValueError:  # rows of different lengths
        return None
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    return m if is_rigid(m) else None


@dataclass
class FrameSpec:
    """One entry of `frames`."""

    file_path: str
    transform_matrix: list[list[float]]
    appearance_id: Annotated[int, pydantic.Field(ge=0)] = 0
    mask_path: str | None = None

    def __post_init__(self):
        if _c2w(self.transform_matrix) is None:
            raise Invalid("transform_matrix", "a rigid 4x4 (or 3x4) camera-to-world matrix (orthonormal rotation with "
                                              "det +1, last row 0 0 0 1)", self.transform_matrix)


@dataclass
class NeuralsimSpec:
    """neuralsim's own block: the names of the lighting conditions that `appearance_id` counts."""

    appearance_names: list[str] = field(default_factory=list)


@dataclass
class TransformsFile:
    """What neuralsim reads of a transforms.json: a pinhole camera, the frames and their splits."""

    __pydantic_config__ = FOREIGN

    frames: Annotated[list[FrameSpec], pydantic.Field(min_length=1)]
    camera_model: Literal["OPENCV", "PINHOLE", "SIMPLE_PINHOLE"] = "OPENCV"
    fl_x: PositiveNumber | None = None
    fl_y: PositiveNumber | None = None
    cx: float | None = None
    cy: float | None = None
    w: PositiveInt | None = None
    h: PositiveInt | None = None
    camera_angle_x: Annotated[float, pydantic.Field(gt=0, lt=math.pi)] | None = None
    k1: float | None = None
    k2: float | None = None
    k3: float | None = None
    k4: float | None = None
    p1: float | None = None
    p2: float | None = None
    train_filenames: list[str] | None = None
    val_filenames: list[str] | None = None
    test_filenames: list[str] | None = None
    neuralsim: NeuralsimSpec | None = None

    def __post_init__(self):
        for key in DISTORTION_KEYS:
            if getattr(self, key):
                raise Invalid(key, "0: neuralsim models pinhole cameras only (undistort the images first)",
                              getattr(self, key))
        if self.fl_x is None and self.camera_angle_x is None:
            raise Invalid("fl_x", "the focal length in pixels (or camera_angle_x)", None)
        if self.fl_x is not None:
            for key in ("w", "h"):
                if getattr(self, key) is None:
                    raise Invalid(key, "the image size in pixels beside fl_x", None)
            for key, size in (("cx", self.w), ("cy", self.h)):
                value = getattr(self, key)
                if value is not None and not 0 < value < size:
                    raise Invalid(key, f"a principal point inside the image (0 < {key} < {size})", value)


def _intrinsics(spec: TransformsFile, first_image: Path) -> Intrinsics:
    if spec.fl_x is not None:
        fx = spec.fl_x
        fy = spec.fl_y if spec.fl_y is not None else fx
        cx = spec.cx if spec.cx is not None else spec.w / 2
        cy = spec.cy if spec.cy is not None else spec.h / 2
        return Intrinsics(fx, fy, cx, cy, spec.w, spec.h)
    if spec.w is not None and spec.h is not None:
        w, h = spec.w, spec.h
    else:
        w, h = _image_size(first_image)
    f = 0.5 * w / math.tan(spec.camera_angle_x / 2)
    return Intrinsics(f, f, w / 2, h / 2, w, h)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise UserError(f"Capture image {path} is missing.") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"Capture image {path} cannot be read ({e}).") from None


def _resolve_file(root: Path, file_path: str) -> str:
    """nerfstudio writes paths with or without the image extension; find the file that exists."""
    p = root / file_path
    if p.suffix or p.is_file():
        return file_path
    for ext in (".png", ".jpg", ".jpeg"):
        if p.with_suffix(ext).is_file():
            return file_path + ext
    return file_path


def load_capture(root: str | Path, check_images: bool = True) -> Capture:
    """Read and validate `root/transforms.json` (and, with `check_images`, decode every image); every problem is one
    `UserError` naming the file and the field."""
    root = Path(root)
    path = root / "transforms.json" if root.is_dir() or not root.suffix else root
    root = path.parent
    what = f"Capture file {path}"
    data = read_json(path, "Capture file")
    spec = from_plain(TransformsFile, data, what)
    frames = [Frame(_resolve_file(root, f.file_path), _c2w(f.transform_matrix), f.appearance_id, f.mask_path)
              for f in spec.frames]
    intrinsics = _intrinsics(spec, root / frames[0].file_path)
    n_app = max(f.appearance_id for f in frames) + 1
    names = list(spec.neuralsim.appearance_names if spec.neuralsim else []) or [f"appearance_{k}" for k in range(n_app)]
    if len(names) < n_app:
        raise problem(what, ("neuralsim", "appearance_names"), f"a name for every appearance_id up to {n_app - 1}",
                      names)
    splits = _splits(spec, frames, what)
    untrained = [names[k] for k in range(len(names)) if all(frames[i].appearance_id != k for i in splits["train"])]
    if untrained:
        raise problem(what, ("neuralsim", "appearance_names"), "lighting conditions that each have a training frame "
                      f"(the field could not learn the appearance of {', '.join(untrained)})", names)
    capture = Capture(root, intrinsics, frames, splits, names, data.get("neuralsim") or {})
    if check_images:
        for i, fr in enumerate(frames):
            if not capture.image_path(fr).is_file():
                raise problem(what, ("frames", i, "file_path"), "an image file that exists", fr.file_path)
            capture.load_rgba(fr)  # decodes it: size, alpha or mask, truncation
    return capture


def _splits(spec: TransformsFile, frames: list[Frame], what: str) -> dict[str, list[int]]:
    index = {f.file_path: i for i, f in enumerate(frames)}
    index.update({str(Path(f.file_path).with_suffix("")): i for i, f in enumerate(frames)})
    if all(getattr(spec, f"{s}_filenames") is None for s in SPLITS):
        # Plain nerfstudio capture without splits: every 10th frame is held out for testing.
        test = [i for i in range(len(frames)) if i % 10 == 9] or [len(frames) - 1]
        train = [i for i in range(len(frames)) if i not in test] or test
        return {"train": train, "val": test, "test": test}
    splits = {}
    for s in SPLITS:
        names = getattr(spec, f"{s}_filenames") or []
        unknown = [n for n in names if n not in index]
        if unknown:
            raise problem(what, (f"{s}_filenames",), "file paths of frames", unknown[0])
        splits[s] = [index[n] for n in names]
    for s in ("train", "test"):
        if not splits[s]:
            raise problem(what, (f"{s}_filenames",), "at least one frame (the fit trains on train_filenames and "
                          "measures itself on test_filenames; or give no splits at all, and every 10th frame is held "
                          "out)", getattr(spec, f"{s}_filenames"))
    return splits


def write_transforms(path: str | Path, intrinsics: Intrinsics, frames: list[Frame], splits: dict[str, list[int]],
                     meta: dict[str, Any]) -> Path:
    """Write a transforms.json (atomically) that nerfstudio and neuralsim both read."""
    data = {
        "camera_model": "OPENCV",
        "fl_x": intrinsics.fx, "fl_y": intrinsics.fy, "cx": intrinsics.cx, "cy": intrinsics.cy,
        "w": intrinsics.width, "h": intrinsics.height,
        "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "frames": [
            {"file_path": f.file_path, "transform_matrix": np.round(f.c2w, 8).tolist(), "appearance_id": f.appearance_id}
            | ({"mask_path": f.mask_path} if f.mask_path else {})
            for f in frames
        ],
        **{f"{s}_filenames": [frames[i].file_path for i in splits.get(s, [])] for s in SPLITS},
        "neuralsim": meta,
    }
    return atomic_write_json(path, data)
