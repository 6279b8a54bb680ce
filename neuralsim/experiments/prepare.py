"""A benchmark's inputs, each made once and cached: captures and fields of its objects, the gap's ground-truth
validation, test and shot sets, and the detector pre-trained on field renders from each ψ₀."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from neuralsim.assets.capture import CaptureConfig
from neuralsim.assets.scenes import SceneSetConfig
from neuralsim.bilevel.field_source import FieldSource, SourceConfig, load_fields
from neuralsim.bilevel.pretrain import train_on_psi
from neuralsim.experiments.cache import cache_root, cached, ensure_capture, ensure_field, ensure_scene_set
from neuralsim.experiments.gaps import Gap, initial_distributions, target_distributions
from neuralsim.experiments.recipes import BenchConfig
from neuralsim.fit.trainer import FitConfig
from neuralsim.runtime import derive_seed, resolve_device, staged_output_dir
from neuralsim.sampling.bins import ObjectDistribution
from neuralsim.sampling.psi import ObjectPsi, Psi
from neuralsim.tasks.checkpoint import save_detector

SOURCE_SEED = 1
"""The backgrounds of the pre-training and retraining renders (the runs draw theirs from their own seed)."""


@dataclass
class Prepared:
    fields: dict[str, str]
    val: str
    test: str
    detectors: dict[str, str]
    """ψ initialisation → detector pre-trained on field renders drawn from it."""
    shots: str | None = None
    """The labelled target-domain images mixed into training, if the bench has any."""


def prepare(bench: BenchConfig, log=print, executor=None) -> Prepared:
    """Captures, fields, validation/test sets and the pre-trained detectors, each made once and cached. Each
    object's field and each set is a piece of its own for `executor` (default: one after another here), and so is
    each initialisation's detector once the fields are there."""
    bench.validate()
    counts = {split: n for split, n in (("val", bench.val_per_object), ("test", bench.test_per_object),
                                         ("shots", bench.shots_per_object)) if n}
    made = _prepare_pieces(bench, [("field", obj) for obj in bench.objects]
                           + [("set", split, n) for split, n in counts.items()], {}, log, executor)
    fields = {obj: made[("field", obj)] for obj in bench.objects}  # the objects' order, not the pieces' finishing one
    sets = {split: made[("set", split, n)] for split, n in counts.items()}
    made = _prepare_pieces(bench, [("detector", init) for init in bench.inits], fields, log, executor)
    detectors = {init: made[("detector", init)] for init in bench.inits}
    return Prepared(fields, sets["val"], sets["test"], detectors, sets.get("shots"))


def ensure_fields(bench: BenchConfig, log=print, executor=None) -> dict[str, str]:
    """Object → the folder of its radiance field, captured at the bench's size and fitted; cached."""
    made = _prepare_pieces(bench, [("field", obj) for obj in bench.objects], {}, log, executor)
    return {obj: made[("field", obj)] for obj in bench.objects}


def prepare_piece(bench: BenchConfig, fields: dict[str, str], piece: tuple) -> str:
    """One cached input of a bench: ("field", object), ("set", split, images per object) or ("detector", init)."""
    kind, name = piece[0], piece[1]
    if kind == "field":
        root = cache_root(bench.cache)
        capture_cfg = CaptureConfig(views=bench.capture_views, size=bench.size, lighting=list(bench.gap_spec.lighting))
        fit_cfg = FitConfig(steps=bench.fit_steps, rays_per_step=bench.fit_rays, eval_every=0)
        return str(ensure_field(root, ensure_capture(root, name, capture_cfg), fit_cfg, bench.device))
    if kind == "set":
        return str(ensure_target_set(bench, name, piece[2], bench.size))
    return str(ensure_pretrained_detector(bench, fields, name))


def _piece_label(piece: tuple) -> str:
    kind, name = piece[0], piece[1]
    return {"field": f"capture and field: {name}", "set": f"ground-truth {name} set: {piece[-1]} images per object",
            "detector": f"detector pre-trained on field renders from ψ₀ = {name}"}[kind]


def _prepare_pieces(bench: BenchConfig, pieces: list[tuple], fields: dict[str, str], log, executor) -> dict[tuple, str]:
    """piece → the cache entry it made, the pieces run through `executor`."""
    from neuralsim.distributed import Serial, gpus_per_task

    root = cache_root(bench.cache)
    root.mkdir(parents=True, exist_ok=True)  # seen by every worker before any of them writes to it
    made = {}
    for piece, path in (executor or Serial()).map_unordered(
            partial(prepare_piece, bench, fields), pieces, num_gpus=gpus_per_task(bench.device), name=_piece_label,
            needs=lambda piece: [root, *fields.values()], makes=lambda piece, path: [path], log=log):
        made[piece] = path
    return made


def ensure_target_set(bench: BenchConfig, split: str, per_object: int, size: int) -> Path:
    """The gap's ground-truth target-domain set `split` (val, test, shots) at `size` px; cached."""
    gap = bench.gap_spec
    cfg = SceneSetConfig(objects=list(bench.objects), images=per_object * len(bench.objects), size=size,
                         distributions=target_distributions(gap), spp=bench.target_spp, name=f"{gap.name}-{split}")
    return ensure_scene_set(cache_root(bench.cache), cfg)


def initial_psi(gap: Gap, init: str) -> Psi:
    """ψ₀ of every object for a gap and an initialisation (same, uniform, different)."""
    return Psi({o: ObjectPsi.from_distribution(ObjectDistribution.from_json(d.to_json(), o))
                for o, d in initial_distributions(gap, init).items()})


def field_source(bench: BenchConfig, fields: dict[str, str]) -> FieldSource:
    """The fields as a renderer of `bench.size` px images with the pre-training's backgrounds."""
    return FieldSource(load_fields(fields, resolve_device(bench.device)), list(bench.objects),
                       list(bench.gap_spec.lighting), SourceConfig(size=bench.size, seed=SOURCE_SEED))


def ensure_pretrained_detector(bench: BenchConfig, fields: dict[str, str], init: str) -> Path:
    """A detector trained from scratch (backbone included) on field renders drawn from ψ₀ = `init`; cached."""
    pretrain = bench.optimize.pretrain
    psi0 = initial_psi(bench.gap_spec, init)
    spec = {"fields": fields, "n": pretrain.images_per_object, "epochs": pretrain.epochs, "init": init,
            "psi0": psi0.to_json(), "detector": bench.optimize.detector, "size": bench.size,
            "class_order": list(bench.objects)}

    def build(out: Path) -> None:
        model = train_on_psi(bench.optimize.detector, psi0, field_source(bench, fields), list(bench.objects),
                             bench.size, pretrain.images_per_object, pretrain.epochs, seed=0,
                             draw_seed=derive_seed(0, "pretrain"), device=resolve_device(bench.device),
                             show_progress=True)
        with staged_output_dir(out, overwrite=True) as stage:
            save_detector(model, stage)

    return cached(cache_root(bench.cache), "detectors", f"pretrained-{init}", spec, build)
