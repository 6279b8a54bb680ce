"""The ultralytics / YOLO detection layout: `images/<split>/<file>`, `labels/<split>/<stem>.txt` with one line
`class cx cy w h` per box (class 0-based, centre and size normalised by the image's width and height, an empty file
for an image without boxes) and `data.yaml` naming the split folders and the classes. A writer from a COCO set and a
reader back to a COCO dict.

`data.yaml` carries no `path`: ultralytics then reads the split folders relative to the folder of `data.yaml`, so the
set can be moved (a relative `path` such as `.` it would resolve against the working directory instead)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from neuralsim.data.coco import CocoSet, load_coco
from neuralsim.errors import UserError
from neuralsim.runtime import atomic_write_text, staged_output_dir

DATA_FILE = "data.yaml"
SPLITS = ("train", "val", "test")
"""The splits ultralytics knows by name; `train` is required."""
IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".heic", ".jpeg", ".jpg", ".mpo", ".pfm", ".png", ".tif", ".tiff", ".webp"})
"""The image files ultralytics reads (others in a split folder it skips)."""
DECIMALS = 6


# ----------------------------------------------------------------------------- COCO → YOLO


def write_yolo(coco_dir: str | Path, out: str | Path, overwrite: bool = False,
               split: Mapping[int, str] | None = None) -> Path:
    """Write the COCO set `coco_dir` (a folder with annotations.json, or the file) as a YOLO set in `out`: the images
    hard-linked (or copied) under their base names, one label file per image, `data.yaml`. `split` maps every image id
    to `train`, `val` or `test` (default: all `train`); without a `val` split, `val` points at the training images.
    Classes are the COCO categories in the order of their ids. Returns `out`."""
    coco = load_coco(coco_dir)
    splits = _splits(coco, split)
    _check_file_names(coco)
    class_of = {c.id: i for i, c in enumerate(coco.categories)}
    with staged_output_dir(out, overwrite) as stage:
        for sample, name in zip(coco.samples, splits):
            image = stage / "images" / name / sample.image_path.name
            image.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(sample.image_path, image)
            lines = [_label_line(class_of[int(label)], box, sample.width, sample.height, coco, sample.image_path)
                     for box, label in zip(sample.boxes_xyxy.tolist(), sample.labels.tolist())]
            atomic_write_text(stage / "labels" / name / f"{image.stem}.txt", "".join(f"{line}\n" for line in lines))
        atomic_write_text(stage / DATA_FILE, data_yaml(coco.category_names, set(splits)))
    return Path(out)


def data_yaml(names: list[str], splits: set[str]) -> str:
    """The text of `data.yaml` for classes `names` and the split folders present (`train` among them)."""
    lines = ["# YOLO detection set written by neuralsim; folders are relative to this file's folder",
             "train: images/train", f"val: images/{'val' if 'val' in splits else 'train'}"]
    lines += ["test: images/test"] if "test" in splits else []
    lines += [f"nc: {len(names)}", "names:"] + [f"  {i}: {_yaml_string(n)}" for i, n in enumerate(names)]
    return "\n".join(lines) + "\n"


def _splits(coco: CocoSet, split: Mapping[int, str] | None) -> list[str]:
    """The split of each sample of `coco`, in its order."""
    if split is None:
        return ["train"] * len(coco.samples)
    ids = [s.image_id for s in coco.samples]
    if unknown := sorted(set(split) - set(ids), key=str):
        raise UserError(f"YOLO split: image ids {_few(unknown)} are not images of COCO file {coco.path}.")
    if missing := [i for i in ids if i not in split]:
        raise UserError(f"YOLO split: images {_few(missing)} of COCO file {coco.path} are given no split.")
    if bad := sorted({str(v) for v in split.values()} - set(SPLITS)):
        raise UserError(f"YOLO split: expected split names {', '.join(SPLITS)}, got {_few(bad)}.")
    if "train" not in split.values():
        raise UserError("YOLO split: no image is in train; a YOLO set needs training images.")
    return [split[i] for i in ids]


def _few(values: list) -> str:
    return ", ".join(map(repr, values[:5])) + (f" and {len(values) - 5} more" if len(values) > 5 else "")


def _check_file_names(coco: CocoSet) -> None:
    """Images are stored under their base names and labelled by their stems: no two may share a stem, and each must
    be a kind of image ultralytics reads."""
    seen: dict[str, Path] = {}
    for sample in coco.samples:
        if sample.image_path.suffix.lower() not in IMAGE_SUFFIXES:
            raise UserError(f"COCO file {coco.path}: image {sample.image_path} is no image file ultralytics reads "
                            f"(expected one of {', '.join(sorted(IMAGE_SUFFIXES))}).")
        stem = sample.image_path.stem
        if stem in seen:
            raise UserError(f"COCO file {coco.path}: images {seen[stem]} and {sample.image_path} would share the "
                            f"label file {stem}.txt in a YOLO set; their file names must differ before the extension.")
        seen[stem] = sample.image_path


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(src, dst)


def _label_line(cls: int, box: list[float], width: int, height: int, coco: CocoSet, image: Path) -> str:
    """`class cx cy w h` of an xyxy pixel box, clipped to its image (COCO boxes may reach half a pixel past it)."""
    x1, x2 = (min(max(0.0, v), width) for v in box[0::2])
    y1, y2 = (min(max(0.0, v), height) for v in box[1::2])
    values = [(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height]
    text = [f"{v:.{DECIMALS}f}" for v in values]
    if float(text[2]) == 0 or float(text[3]) == 0:
        raise UserError(f"COCO file {coco.path}: a box {box} of image {image} covers none of its {width}x{height} "
                        "pixels; a YOLO label needs a box with width and height inside the image.")
    return " ".join([str(cls), *text])


def _yaml_string(text: str) -> str:
    """`text` as a double-quoted YAML scalar (JSON's escapes, which YAML shares, and YAML's non-printable
    characters escaped)."""
    quoted = json.dumps(text, ensure_ascii=False)
    return "".join(f"\\u{ord(c):04x}" if 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029\ufeff\ufffe\uffff" else c
                   for c in quoted)


# ----------------------------------------------------------------------------- YOLO → COCO


def read_yolo(yolo_dir: str | Path) -> dict:
    """The YOLO set in `yolo_dir` (with `data.yaml`) as a COCO dict: the images of the `train`, `val` and `test`
    folders (each folder once; file names relative to `yolo_dir`, sizes read from the files), their boxes in pixels
    [x, y, w, h] and the classes as categories with ids from 1, all in order. A missing label file is an image without
    boxes; a malformed label line is a `UserError` naming its file and line."""
    from PIL import Image, UnidentifiedImageError

    yolo_dir = Path(yolo_dir)
    spec_path = yolo_dir / DATA_FILE
    spec = read_data_yaml(spec_path)
    names = _class_names(spec, spec_path)
    root = yolo_dir / spec["path"] if isinstance(spec.get("path"), str) and spec["path"] else yolo_dir
    if "train" not in spec:
        raise UserError(f"YOLO data file {spec_path}: train: required, but not given")
    folders: list[Path] = []
    for key in SPLITS:
        if key not in spec:
            continue
        if not isinstance(spec[key], str) or not (root / spec[key]).is_dir():
            raise UserError(f"YOLO data file {spec_path}: {key}: expected a folder of images (relative to {root}), "
                            f"got {spec[key]!r}")
        folder = (root / spec[key]).resolve()
        if folder not in folders:
            folders.append(folder)
    images, annotations = [], []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
            try:
                with Image.open(path) as im:
                    width, height = im.size
            except (OSError, UnidentifiedImageError) as e:
                raise UserError(f"Image {path} cannot be read ({e}).") from None
            image_id = len(images) + 1
            file_name = path.relative_to(yolo_dir.resolve()).as_posix() if path.is_relative_to(yolo_dir.resolve()) \
                else str(path)
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for cls, (cx, cy, w, h) in read_labels(label_path(path), len(names)):
                bbox = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                                    "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    categories = [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)]
    return {"info": {"description": f"YOLO set {yolo_dir}"}, "images": images, "annotations": annotations,
            "categories": categories}


def label_path(image: Path) -> Path:
    """The label file of an image: its last `images` folder replaced by `labels`, its extension by `.txt`."""
    parts = image.parts
    at = max((i for i, part in enumerate(parts[:-1]) if part == "images"), default=None)
    if at is not None:
        parts = (*parts[:at], "labels", *parts[at + 1 :])
    return Path(*parts).with_suffix(".txt")


_CLASS = re.compile(r"\d+")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def read_labels(path: Path, num_classes: int) -> list[tuple[int, tuple[float, float, float, float]]]:
    """The boxes of one label file, (class, (cx, cy, w, h)) normalised; none if the file does not exist."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"YOLO label file {path} is not UTF-8 text ({e}).") from None
    boxes = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"YOLO label file {path}: line {n}"
        if len(fields) != 5:
            raise UserError(f"{where}: expected 5 fields `class cx cy w h`, got {len(fields)}: {line.strip()!r}")
        if not _CLASS.fullmatch(fields[0]) or int(fields[0]) >= num_classes:
            raise UserError(f"{where}: class: expected a class index from 0 to {num_classes - 1}, got {fields[0]!r}")
        values = []
        for key, field in zip(("cx", "cy", "w", "h"), fields[1:]):
            if not _NUMBER.fullmatch(field) or not 0 <= float(field) <= 1:
                raise UserError(f"{where}: {key}: expected a number in [0, 1] (normalised by the image's size), "
                                f"got {field!r}")
            values.append(float(field))
        if values[2] == 0 or values[3] == 0:
            raise UserError(f"{where}: w, h: expected a box of width and height > 0, got {line.strip()!r}")
        boxes.append((int(fields[0]), tuple(values)))
    return boxes


def _class_names(spec: dict, path: Path) -> list[str]:
    if "names" not in spec:
        raise UserError(f"YOLO data file {path}: names: required, but not given")
    names = spec["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise UserError(f"YOLO data file {path}: names: expected class indices 0 to {len(names) - 1}, "
                            f"got {sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names:
        raise UserError(f"YOLO data file {path}: names: expected a list or mapping of class names, got {names!r}")
    if "nc" in spec and spec["nc"] != str(len(names)):
        raise UserError(f"YOLO data file {path}: nc: expected {len(names)} (the number of names), got {spec['nc']!r}")
    return names


# ----------------------------------------------------------------------------- data.yaml

_TOP_KEY = re.compile(r"([A-Za-z_][\w-]*)\s*:(?:\s+(.*))?")
_NAMES_ITEM = re.compile(r"\s+(?:(\d+)\s*:|-)(?:\s+(.*))?")
_DOUBLE = re.compile(r'"(?:[^"\\]|\\.)*"')
_SINGLE = re.compile(r"'(?:[^']|'')*'")
_FLOW_ITEM = re.compile(r"""\s*("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^,\]'"]*?)\s*([,\]])""")
KEYS = ("path", "train", "val", "test", "nc", "names")
"""The keys of data.yaml that neuralsim reads; others (and the blocks under them) are skipped."""


def read_data_yaml(path: Path) -> dict:
    """The keys of `data.yaml` that neuralsim reads: strings, and `names` as a list or an index → name mapping.
    Read without a YAML library, so only the plain forms that YOLO tools write are understood: `key: value` with plain
    or quoted values, and `names` as a block mapping, a block list or a one-line `[…]` list."""
    if not path.is_file():
        raise UserError(f"YOLO data file {path} does not exist.")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"YOLO data file {path} is not UTF-8 text ({e}).") from None
    spec: dict = {}
    key = None  # the top-level key whose indented block is being read
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#") or line.strip() == "---":
            continue
        try:
            if line[0] in " \t":
                if key != "names":
                    continue
                m = _NAMES_ITEM.fullmatch(line)
                if not m:
                    raise ValueError("`  index: name` or `  - name`")
                names = spec.setdefault("names", {} if m.group(1) else [])
                if isinstance(names, dict) != bool(m.group(1)):
                    raise ValueError("entries all of one form, `index: name` or `- name`")
                if isinstance(names, dict):
                    names[int(m.group(1))] = _scalar(m.group(2) or "")
                else:
                    names.append(_scalar(m.group(2) or ""))
                continue
            m = _TOP_KEY.fullmatch(line)
            if not m:
                raise ValueError("`key: value`")
            key, value = m.group(1), (m.group(2) or "").strip()
            if key not in KEYS or not value or value.startswith("#"):
                continue
            spec[key] = _flow_list(value) if key == "names" and value.startswith("[") else _scalar(value)
        except ValueError as e:
            raise UserError(f"YOLO data file {path}: line {n}: expected {e}, got {line.strip()!r}") from None
    return spec


def _scalar(text: str) -> str:
    """One YAML scalar, double-quoted, single-quoted or plain, with an optional comment after it."""
    text = text.strip()
    if m := (_DOUBLE.match(text) if text.startswith('"') else _SINGLE.match(text) if text.startswith("'") else None):
        try:
            value = json.loads(m.group()) if text[0] == '"' else m.group()[1:-1].replace("''", "'")
        except json.JSONDecodeError:
            raise ValueError("a quoted string with JSON's escapes") from None
        rest = text[m.end() :].strip()
    elif text[:1] in ("", '"', "'", "[", "{", "&", "*", "!", "|", ">", "%", "@", "`"):
        raise ValueError("a plain or quoted string")
    else:
        value, _, comment = text.partition(" #")
        value, rest = value.strip(), "#" * bool(comment)
    if rest and not rest.startswith("#"):
        raise ValueError("one value (and a comment after #)")
    return value


def _flow_list(text: str) -> list[str]:
    """A one-line list `[a, 'b', "c"]`."""
    items, pos = [], 1
    while True:
        m = _FLOW_ITEM.match(text, pos)
        if not m:
            raise ValueError("a one-line list [name, …]")
        if m.group(1) or m.group(2) == ",":
            items.append(_scalar(m.group(1)))
        pos = m.end()
        if m.group(2) == "]":
            break
    rest = text[pos:].strip()
    if rest and not rest.startswith("#"):
        raise ValueError("a one-line list [name, …]")
    return items
