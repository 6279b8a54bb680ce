"""The project file of `neuralsim learn`: the user's objects and photos, and the few settings worth changing, each
default written once. JSON, YAML or TOML; relative paths are relative to the file."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from neuralsim.assets.catalog import YCB_VIDEO
from neuralsim.bilevel.config import OptimizeConfig, PretrainConfig
from neuralsim.bilevel.estimators.base import SecondOrderConfig
from neuralsim.bilevel.inverse_hvp import InverseHVPConfig
from neuralsim.errors import UserError
from neuralsim.sampling.bins import FACTORS
from neuralsim.sampling.optim import PsiOptimizerConfig
from neuralsim.schema import Invalid, from_plain
from neuralsim.tasks.detector import DetectorConfig

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
LIGHTING = ["studio", "warm_left", "cool_right", "dim_top"]
"""The conditions each mesh is captured under and each field learns; ψ mixes them."""
WIDE_RANGES = {"azimuth": (0.0, 360.0), "elevation": (0.0, 60.0), "radius": (5.0, 15.0)}
"""Domain randomisation's ranges: every side, from level to steeply above, and far enough for several objects to
share an image (an object, 2 units across, spans 55 % of a 40° view's width at radius 5 and 18 % at 15)."""


@dataclass
class ObjectEntry:
    """One object: `source` is a built-in name, a mesh file, a capture folder (transforms.json) or a fitted field
    folder (field.json); `name` is its class in the photos (default: the built-in name or the file's stem)."""

    source: str
    name: str | None = None


@dataclass
class PhotosConfig:
    """The labelled photos: one COCO file that the command splits into validation and test, or both sets given."""

    coco: str | None = None
    """One COCO file (any image sizes, several objects per photo), split by the command."""
    val: str | None = None
    """A validation COCO file (drives ψ), given with `test` instead of `coco`."""
    test: str | None = None
    """A test COCO file (judges the detectors)."""
    val_fraction: float = 0.5
    """Share of `coco`'s photos (per class, as near as several classes per photo allow) that drive ψ; the rest test."""

    def __post_init__(self):
        if (self.coco is None) == (self.val is None and self.test is None) or (self.val is None) != (self.test is None):
            raise Invalid("photos", "either coco, or both val and test", dataclasses.asdict(self))
        if not 0.0 < self.val_fraction < 1.0:
            raise Invalid("val_fraction", "a fraction between 0 and 1", self.val_fraction)


@dataclass
class ExportSettings:
    """The learned dataset, the product: rendered from the fields at its own size."""

    size: int = 256
    """Image width and height of the exported dataset (the fields render at it, whatever the working size)."""
    images_per_object: int = 200
    """Images showing each object as their own (others may appear beside it)."""
    formats: list[str] = field(default_factory=lambda: ["coco", "yolo"])
    """coco (images/ + annotations.json, always) and yolo (the ultralytics layout in yolo/)."""
    quotas: dict[str, int] = field(default_factory=dict)
    """Object → images, where an object needs another number than `images_per_object`."""


@dataclass
class JudgeSettings:
    """Detectors trained from scratch on learned and on domain-randomisation data, paired, scored on the test photos."""

    seeds: int = 3
    """Paired trainings (learned and DR with the same random numbers), one per seed."""
    images_per_object: int = 80
    """Training images per object of each judged detector."""
    epochs: int = 30


@dataclass
class PrepareSettings:
    """How meshes are captured (Mitsuba) and fields fitted."""

    views: int = 60
    """Path-traced views of each mesh or built-in object."""
    capture_size: int = 64
    """Their width and height in pixels."""
    fit_steps: int = 250
    """Optimiser steps of each field fit."""
    fit_rays: int = 2048
    """Rays per fitting step."""
    lighting: list[str] = field(default_factory=lambda: list(LIGHTING))
    """Lighting conditions each mesh is captured under; ψ mixes those all fields share."""


def default_learning() -> OptimizeConfig:
    """ψ learned from domain randomisation over every factor with `influence`, at the demo's CPU sizes (the
    inputs, ψ₀ and the image size are the project's)."""
    return OptimizeConfig(
        factors=[*FACTORS, "lighting"], bins={"azimuth": 8, "elevation": 4, "radius": 4},
        steps=12, images_per_object=20, detector=DetectorConfig(fpn_channels=128),
        pretrain=PretrainConfig(images_per_object=80, epochs=30),
        hypergradient=SecondOrderConfig(hvp_images=20, inverse_hvp=InverseHVPConfig(damping=1.0, iterations=5)),
        psi_optimizer=PsiOptimizerConfig(lr=1.0))


@dataclass
class ProjectConfig:
    """Everything `neuralsim learn` needs; saved in the output folder as config.json."""

    objects: list[str | ObjectEntry]
    """Built-in names, mesh files (OBJ/PLY/GLB/STL), capture folders or field folders, mixed freely."""
    photos: PhotosConfig
    """The labelled photos from where the detector will run."""
    size: int = 64
    """Working image size: the photos are letterboxed to it, the loop renders and the detectors train at it."""
    objects_per_image: int | None = None
    """Most objects in one training image; None: the most the photos show in one."""
    backgrounds: str | None = None
    """A folder of background photos (where the detector will run, without the objects) for the training images;
    None: procedural backgrounds."""
    ranges: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(WIDE_RANGES))
    """The factors' ranges, over which domain randomisation (ψ₀) is uniform."""
    learn: OptimizeConfig = field(default_factory=default_learning)
    """How ψ is learned (method, factors, bins, steps, detector, …); its inputs are the project's."""
    export: ExportSettings = field(default_factory=ExportSettings)
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    prepare: PrepareSettings = field(default_factory=PrepareSettings)
    seed: int = 0
    """Every random number of the run (split, draws, backgrounds, detectors) derives from it."""
    cache: str | None = None
    """Folder of the captures and fields made from meshes; None: $NEURALSIM_CACHE or ~/.cache/neuralsim."""
    device: str = "auto"

    def __post_init__(self):
        if not self.objects:
            raise Invalid("objects", "at least one object", self.objects)
        if self.size < 16:
            raise Invalid("size", "at least 16 pixels", self.size)
        if self.objects_per_image is not None and self.objects_per_image < 1:
            raise Invalid("objects_per_image", "at least 1", self.objects_per_image)
        for name, (low, high) in self.ranges.items():
            if name not in FACTORS or not low < high:
                raise Invalid(("ranges", name), f"a factor of {', '.join(FACTORS)} with low < high", [low, high])

    def entries(self) -> list[ObjectEntry]:
        return [e if isinstance(e, ObjectEntry) else ObjectEntry(e) for e in self.objects]

    def names(self) -> list[str]:
        """The objects' class names, in order."""
        names = [object_name(e) for e in self.entries()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserError(f"Object name(s) {twice} are given twice; give each object its own name.")
        return names


def object_name(entry: ObjectEntry) -> str:
    if entry.name is not None:
        return entry.name
    return entry.source if entry.source in YCB_VIDEO else Path(entry.source).stem


def load_project(path: str | Path) -> ProjectConfig:
    """Read a project file (.json, .yaml/.yml or .toml); relative paths in it become relative to its folder."""
    path = Path(path)
    what = f"Project file {path}"
    if not path.is_file():
        raise UserError(f"{what} does not exist.")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as e:  # each parser has its own error type; all mean the same to the user
        raise UserError(f"{what} is not valid {path.suffix.lstrip('.').upper() or 'JSON'}: {str(e).splitlines()[0]}") from None
    return _relative_to(project_from_plain(data, what), path.resolve().parent)


def project_from_plain(data, what: str) -> ProjectConfig:
    """A `ProjectConfig` from plain data; a partial `learn` changes only what it names of `default_learning()` (a
    `method` given replaces the default method with all its settings)."""
    from neuralsim.runtime import to_plain

    if isinstance(data, dict) and isinstance(data.get("learn"), dict):
        data = data | {"learn": _merged(to_plain(default_learning()), data["learn"])}
    return from_plain(ProjectConfig, data, what)


def _merged(base: dict, given: dict) -> dict:
    out = dict(base)
    for key, value in given.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict) and key != "method"
        out[key] = _merged(base[key], value) if nested else value
    return out


def _relative_to(project: ProjectConfig, folder: Path) -> ProjectConfig:
    def resolve(p: str | None) -> str | None:
        if p is None or p in YCB_VIDEO or Path(p).is_absolute():
            return p
        return str(folder / p)

    entries = [dataclasses.replace(e, source=resolve(e.source)) for e in project.entries()]
    photos = dataclasses.replace(project.photos, coco=resolve(project.photos.coco), val=resolve(project.photos.val),
                                 test=resolve(project.photos.test))
    return dataclasses.replace(project, objects=entries, photos=photos, backgrounds=resolve(project.backgrounds),
                               cache=resolve(project.cache) if project.cache else None)
