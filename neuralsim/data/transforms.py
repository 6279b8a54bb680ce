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
from typing import Any

import numpy as np

from neuralsim.cameras import Intrinsics, is_rigid
from neuralsim.errors import UserError
from neuralsim.runtime import atomic_write_json, read_json

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


PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def _intrinsics(data: dict, path: Path, first_image: Path | None) -> Intrinsics:
    try:
        return _pinhole(data, path, first_image)
    except (TypeError, ValueError):
        raise UserError(f"{path}: the camera intrinsics (w, h, fl_x, fl_y, cx, cy, camera_angle_x) must be numbers.") from None


def _pinhole(data: dict, path: Path, first_image: Path | None) -> Intrinsics:
    model = data.get("camera_model", "OPENCV")
    if model not in PINHOLE_MODELS:
        raise UserError(f"{path} has camera_model {model!r}; neuralsim models pinhole cameras only "
                        f"({', '.join(PINHOLE_MODELS)}): undistort the images first.")
    distorted = {k: data[k] for k in DISTORTION_KEYS if float(data.get(k) or 0.0) != 0.0}
    if distorted:
        raise UserError(f"{path} gives lens distortion ({', '.join(f'{k}={v}' for k, v in distorted.items())}); "
                        "neuralsim models pinhole cameras only: undistort the images first.")
    if "fl_x" in data:
        missing = [k for k in ("fl_x", "w", "h") if k not in data]
        if missing:
            raise UserError(f"{path} gives fl_x but lacks {', '.join(missing)}.")
        w, h = int(data["w"]), int(data["h"])
        fx = float(data["fl_x"])
        fy = float(data.get("fl_y", fx))
        cx, cy = float(data.get("cx", w / 2)), float(data.get("cy", h / 2))
    elif "camera_angle_x" in data:
        if "w" in data and "h" in data:
            w, h = int(data["w"]), int(data["h"])
        elif first_image is not None and first_image.is_file():
            from PIL import Image

            with Image.open(first_image) as im:
                w, h = im.size
        else:
            raise UserError(f"{path} gives camera_angle_x but no w/h, and its first image cannot be read for the size.")
        fx = fy = 0.5 * w / math.tan(float(data["camera_angle_x"]) / 2)
        cx, cy = w / 2, h / 2
    else:
        raise UserError(f"{path} lacks the camera intrinsics: expected fl_x, fl_y, cx, cy, w, h (or camera_angle_x).")
    if w <= 0 or h <= 0 or fx <= 0 or fy <= 0:
        raise UserError(f"{path} has non-positive image size or focal length (w={w}, h={h}, fl_x={fx}, fl_y={fy}).")
    return Intrinsics(fx, fy, cx, cy, w, h)


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
    """Read and validate `root/transforms.json`; every problem is one `UserError` naming it."""
    root = Path(root)
    path = root / "transforms.json" if root.is_dir() or not root.suffix else root
    root = path.parent
    data = read_json(path, "Capture file")
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object.")
    raw_frames = data.get("frames")
    if not isinstance(raw_frames, list) or not raw_frames:
        raise UserError(f"{path} has no frames (expected a non-empty 'frames' list).")
    frames: list[Frame] = []
    for i, fr in enumerate(raw_frames):
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise UserError(f"{path}: frame {i} lacks file_path or transform_matrix.")
        try:
            m = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            raise UserError(f"{path}: frame {i} has a transform_matrix that is not a 4x4 matrix of numbers.") from None
        if m.shape == (3, 4):
            m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
        if m.shape != (4, 4):
            raise UserError(f"{path}: frame {i} has a transform_matrix of shape {m.shape}, expected 4x4.")
        if not is_rigid(m):
            raise UserError(f"{path}: frame {i} ({fr['file_path']}) has a transform_matrix that is not rigid "
                            "(rotation must be orthonormal with det +1, last row 0 0 0 1).")
        appearance = fr.get("appearance_id", 0)
        if not isinstance(appearance, int) or appearance < 0:
            raise UserError(f"{path}: frame {i} has appearance_id {appearance!r}; expected an integer ≥ 0.")
        frames.append(Frame(_resolve_file(root, str(fr["file_path"])), m, appearance, fr.get("mask_path")))
    intrinsics = _intrinsics(data, path, root / frames[0].file_path)
    meta = data.get("neuralsim", {}) or {}
    if not isinstance(meta, dict):
        raise UserError(f"{path}: 'neuralsim' must be a JSON object of neuralsim's extra fields.")
    n_app = max(f.appearance_id for f in frames) + 1
    names = meta.get("appearance_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: neuralsim.appearance_names must be a list of names (strings).")
    names = list(names) or [f"appearance_{k}" for k in range(n_app)]
    if len(names) < n_app:
        raise UserError(f"{path}: frames use appearance_id up to {n_app - 1} but only {len(names)} names are given.")
    splits = _splits(data, frames, path)
    untrained = [names[k] for k in range(len(names)) if all(frames[i].appearance_id != k for i in splits["train"])]
    if untrained:
        raise UserError(f"{path}: lighting condition(s) {', '.join(untrained)} have no training frame, so the field "
                        "could not learn their appearance.")
    capture = Capture(root, intrinsics, frames, splits, names, meta)
    if check_images:
        for fr in frames:
            p = capture.image_path(fr)
            if not p.is_file():
                raise UserError(f"Capture image {p} named in {path} is missing.")
        capture.load_rgba(frames[0])  # size and alpha/mask of the first image; the others at load time
        from PIL import Image

        for fr in frames[1:]:
            with Image.open(capture.image_path(fr)) as im:
                if im.size != (intrinsics.width, intrinsics.height):
                    raise UserError(f"Capture image {capture.image_path(fr)} is {im.size[0]}x{im.size[1]} but the capture "
                                    f"says {intrinsics.width}x{intrinsics.height}; all images must have the same size.")
    return capture


def _splits(data: dict, frames: list[Frame], path: Path) -> dict[str, list[int]]:
    index = {f.file_path: i for i, f in enumerate(frames)}
    index.update({str(Path(f.file_path).with_suffix("")): i for i, f in enumerate(frames)})
    if not any(f"{s}_filenames" in data for s in SPLITS):
        # Plain nerfstudio capture without splits: every 10th frame is held out for testing.
        test = [i for i in range(len(frames)) if i % 10 == 9] or [len(frames) - 1]
        train = [i for i in range(len(frames)) if i not in test] or test
        return {"train": train, "val": test, "test": test}
    splits = {}
    for s in SPLITS:
        names = data.get(f"{s}_filenames", [])
        unknown = [n for n in names if n not in index]
        if unknown:
            raise UserError(f"{path}: {s}_filenames names {unknown[0]!r}, which is not a frame.")
        splits[s] = [index[n] for n in names]
    if not splits["train"]:
        raise UserError(f"{path}: train_filenames is empty.")
    if not splits["test"]:
        raise UserError(f"{path}: test_filenames is empty or missing; the fit needs held-out views to measure itself "
                        "(list some, or give no splits at all and every 10th frame is held out).")
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
