"""The benchmark recipes (paper §4.1 on YCB-synthetic): make or reuse captures, fields, target sets and a
detector pre-trained on uniform-ψ field data, then run every (initialisation, method, seed) as its own
optimize run and compare them at equal compute. Each run is a plain function of its config and folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from neuralsim.assets.capture import CaptureConfig
from neuralsim.assets.catalog import PAPER_SIX
from neuralsim.assets.scenes import SceneSetConfig
from neuralsim.bilevel.field_source import SourceConfig
from neuralsim.bilevel.loop import BilevelRun, OptimizeConfig
from neuralsim.errors import UserError
from neuralsim.experiments.cache import cache_root, cached, ensure_capture, ensure_field, ensure_scene_set
from neuralsim.experiments.gaps import GAPS, INITS, Gap, bench_gap, initial_distributions, target_distributions
from neuralsim.fit.trainer import FitConfig
from neuralsim.runtime import (
    atomic_write_json,
    derive_seed,
    dumps_json,
    from_plain,
    read_json,
    resolve_device,
    to_plain,
)
from neuralsim.sampling.bins import ObjectDistribution
from neuralsim.sampling.psi import ObjectPsi, Psi
from neuralsim.tasks.detector import DetectorConfig
from neuralsim.tasks.train import TrainConfig


@dataclass
class BenchConfig:
    """One gap experiment: assets, target sets, the pre-trained detector and the grid of runs."""

    gap: str = "pose"
    """pose, zoom, illumination or ycb21."""
    objects: list[str] = field(default_factory=lambda: list(PAPER_SIX))
    biased: list[str] = field(default_factory=lambda: ["019_pitcher_base", "035_power_drill"])
    target_bin: int | str | None = None
    """The bin the biased objects are tested from (0-based), instead of the gap's own; on the illumination gap also a
    lighting condition's name. None: the gap's (pose: azimuth bin 0, zoom: the farthest radius bin, illumination:
    dim_top)."""
    different_bin: int | str | None = None
    """The bin that ψ₀ = "different" puts its mass on, as `target_bin`; None: the gap's."""
    lighting: list[str] | None = None
    """The lighting conditions captured, fitted into the fields and drawn (None: the gap's own — studio only, the
    illumination gap's four). On the illumination gap they are ψ's bins; `target_bin` and `different_bin` may then
    name any of them, and must when the gap's own (dim_top, studio) are left out."""
    size: int = 64
    """Image size of captures, target sets and training images (pixels)."""
    capture_views: int = 100
    fit_steps: int = 1500
    fit_rays: int = 4096
    """Rays per fitting step."""
    val_per_object: int = 20
    test_per_object: int = 50
    shots_per_object: int = 0
    """Labelled target-domain images per object (drawn like the validation set, a separate draw) mixed into every
    outer step's detector training: the paper's combined setting (Table 2). 0: none."""
    target_spp: int = 32
    pretrain_per_object: int = 100
    """Field-rendered images per object, drawn from the run's initial ψ, for pre-training the detector
    (backbone included). Pre-training on ψ₀ rather than uniform ψ keeps the target bins out of the detector's
    past: a uniform pre-training set already covers them and leaves the optimisation nothing to recover."""
    pretrain_epochs: int = 12
    methods: list[str] = field(default_factory=lambda: ["ns", "nso", "influence"])
    inits: list[str] = field(default_factory=lambda: ["different"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = 20
    images_per_object: int = 50
    detector: DetectorConfig = field(default_factory=lambda: DetectorConfig(backbone="resnet18", image_size=64,
                                                                           box_loss="smooth_l1"))
    """The smooth-L1 box loss, not torchvision's L1: under L1 the pathwise estimator (`nso`) cannot see a box
    move, and on the zoom gap the smooth-L1 detector also scored higher for every method (docs/RESULTS.md)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, trainable="heads", init="warm",
                                                                   warmup_steps=10, lr=1e-4))
    """Detector training in each outer step (the paper: two epochs, backbone fixed). The learning rate is a tenth
    of pre-training's: at 1e-3, three such rounds on ψ₀'s own data cut the pre-trained detector's test AP from
    12.4 to 5.4 (zoom gap, demo size), at 1e-4 they raise it to 14.0."""
    tau: float = 0.1
    pathwise_labels: bool = True
    """nso: move each image's box with the render (needs a smooth box loss in `detector`; see DESIGN.md §5)."""
    psi_lr: float = 0.5
    """Length of one normalised ψ step, shared by every object's logits: when K objects all have gradients of
    similar size, each moves by about psi_lr/√K. With all 21 objects biased (ycb21) and steps of 1, the dominant bin
    fell only from 0.80 to 0.71 on average in 12 steps; benchmarks/configs/ycb21-demo-lr3.json uses 3.2 = √(21/2),
    each object's step in the zoom runs with two biased objects (docs/RESULTS.md). `psi_per_object` makes the
    scaling automatic."""
    psi_optimizer: str = "normalized"
    psi_gate: float = 1.0
    """`gated` ψ optimiser: the threshold in standard errors; see `PsiOptimizerConfig.gate`."""
    psi_per_object: bool = False
    """Normalised ψ steps of length psi_lr per object (on average) rather than in all; see
    `PsiOptimizerConfig.per_object`."""
    psi_objects: str = "all"
    """Objects whose ψ the methods optimise: "all", or "biased" — the others keep ψ₀, which on the gaps is their test
    distribution (`OptimizeConfig.psi_objects`)."""
    psi_natural: bool = True
    """Natural-gradient (mirror-descent) ψ steps on the bin logits; see `PsiOptimizerConfig.natural`."""
    paired_probes: bool = False
    """influence: probe j of every bin shares everything but the bin; see `HypergradientConfig.paired_probes`."""
    damping: float = 0.1
    cg_iterations: int = 10
    hvp_images: int = 48
    retrain_per_object: int = 0
    """After each run, a detector is trained from scratch on this many field renders per object drawn from the run's
    final ψ, and one on ψ₀ drawn with the same random numbers (the control: only ψ differs), both scored on the test
    set — the paper's measure, a detector trained on the learned data. NS's data is the control's. 0: none."""
    retrain_epochs: int = 30
    cache: str | None = None
    device: str = "cpu"

    def validate(self) -> None:
        if self.gap not in GAPS:
            raise UserError(f"Unknown gap {self.gap!r}; choose from {', '.join(GAPS)}.")
        bad = [i for i in self.inits if i not in INITS]
        if bad:
            raise UserError(f"Unknown initialisation(s) {bad}; choose from {', '.join(INITS)}.")
        if not set(self.biased) <= set(self.objects):
            raise UserError(f"Biased objects {self.biased} must be among the objects {self.objects}.")
        from neuralsim.bilevel.loop import METHODS

        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise UserError(f"Unknown method(s) {bad}; choose from {', '.join(METHODS)}.")
        if GAPS[self.gap].factor == "lighting" and {"autosim", "lts"} & set(self.methods):
            raise UserError(f"The {self.gap} gap optimises lighting weights, which autosim and lts cannot (their "
                            "estimates cover bin logits only); use ns, nso or influence.")
        counts = {"size": self.size, "capture_views": self.capture_views, "fit_steps": self.fit_steps,
                  "val_per_object": self.val_per_object, "test_per_object": self.test_per_object,
                  "pretrain_per_object": self.pretrain_per_object, "steps": self.steps,
                  "images_per_object": self.images_per_object, "seeds": len(self.seeds), "methods": len(self.methods)}
        bad = [k for k, v in counts.items() if not isinstance(v, int) or v < 1]
        if bad:
            raise UserError(f"Bench settings {bad} must be positive integers (or non-empty lists).")
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds):
            raise UserError(f"Seeds must be whole numbers ≥ 0, got {self.seeds!r}.")
        if self.psi_objects not in ("all", "biased"):
            raise UserError(f"psi_objects must be 'all' or 'biased', not {self.psi_objects!r}.")
        if not isinstance(self.shots_per_object, int) or self.shots_per_object < 0:
            raise UserError(f"shots_per_object must be a whole number ≥ 0, got {self.shots_per_object!r}.")
        if not isinstance(self.retrain_per_object, int) or self.retrain_per_object < 0 \
                or not isinstance(self.retrain_epochs, int) or self.retrain_epochs < 1:
            raise UserError(f"retrain_per_object must be a whole number ≥ 0 and retrain_epochs ≥ 1, got "
                            f"{self.retrain_per_object!r} and {self.retrain_epochs!r}.")
        _ = self.gap_spec  # a UserError on a bad target_bin or different_bin

    @property
    def gap_spec(self) -> Gap:
        return bench_gap(self.gap, self.objects, self.biased, self.target_bin, self.different_bin, self.lighting)


def load_bench_config(gap_or_path: str) -> BenchConfig:
    """The recipe's defaults for a gap name, or a `BenchConfig` from a JSON file; validated."""
    path = Path(gap_or_path)
    if gap_or_path.endswith(".json") or path.is_file():
        bench = from_plain(BenchConfig, read_json(path, "Bench config"), f"Bench config {path}")
        if not isinstance(bench.detector, DetectorConfig) or not isinstance(bench.train, TrainConfig):
            raise UserError(f"Bench config {path}: detector and train must be JSON objects of their settings.")
    else:
        bench = BenchConfig(gap=gap_or_path)
        if gap_or_path in GAPS and GAPS[gap_or_path].objects != tuple(PAPER_SIX):  # ycb21: its own objects
            bench.objects, bench.biased = list(GAPS[gap_or_path].objects), list(GAPS[gap_or_path].biased)
    bench.validate()
    return bench


@dataclass
class Prepared:
    fields: dict[str, str]
    val: str
    test: str
    detectors: dict[str, str]
    """ψ initialisation → detector pre-trained on field renders drawn from it."""
    shots: str | None = None
    """The labelled target-domain images mixed into training, if the bench has any."""


def prepare(bench: BenchConfig, log=print) -> Prepared:
    """Captures, fields, validation/test sets and the pre-trained detector, each made once and cached."""
    bench.validate()
    root = cache_root(bench.cache)
    fields = ensure_fields(bench, log)
    sets = {}
    for split, n in (("val", bench.val_per_object), ("test", bench.test_per_object), ("shots", bench.shots_per_object)):
        if n == 0:
            continue
        log(f"ground-truth {split} set: {n} images per object")
        sets[split] = str(ensure_target_set(bench, split, n, bench.size))
    detectors = {}
    for init in bench.inits:
        log(f"detector pre-trained on field renders from ψ₀ = {init}")
        detectors[init] = str(ensure_pretrained_detector(root, bench, fields, init))
    return Prepared(fields, sets["val"], sets["test"], detectors, sets.get("shots"))


def ensure_fields(bench: BenchConfig, log=print) -> dict[str, str]:
    """Object → the folder of its radiance field, captured at the bench's size and fitted; cached."""
    root = cache_root(bench.cache)
    capture_cfg = CaptureConfig(views=bench.capture_views, size=bench.size, lighting=list(bench.gap_spec.lighting))
    fit_cfg = FitConfig(steps=bench.fit_steps, rays_per_step=bench.fit_rays, eval_every=0)
    fields = {}
    for obj in bench.objects:
        log(f"capture and field: {obj}")
        fields[obj] = str(ensure_field(root, ensure_capture(root, obj, capture_cfg), fit_cfg, bench.device))
    return fields


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


def ensure_pretrained_detector(root: Path, bench: BenchConfig, fields: dict[str, str], init: str) -> Path:
    """A detector trained (backbone included) on field renders drawn from ψ₀ = `init`; cached."""
    spec = {"fields": fields, "n": bench.pretrain_per_object, "epochs": bench.pretrain_epochs, "init": init,
            "psi0": initial_psi(bench.gap_spec, init).to_json(), "detector": bench.detector, "size": bench.size}
    if list(bench.objects) != sorted(bench.objects):
        # class c is the c-th object, and the dicts above hash without order: record an order other than the sorted
        # one (left out when sorted, which keeps the keys of the detectors cached before the order was recorded)
        spec["class_order"] = list(bench.objects)
    return cached(root, "detectors", f"pretrained-{init}", spec, lambda out: _pretrain(bench, fields, init, out))


def _pretrain(bench: BenchConfig, fields: dict[str, str], init: str, out: Path) -> None:
    from neuralsim.bilevel.data import draw_training_set
    from neuralsim.bilevel.field_source import FieldSource, load_fields
    from neuralsim.runtime import staged_output_dir
    from neuralsim.tasks.checkpoint import save_detector
    from neuralsim.tasks.data import TensorDetectionData

    gap = bench.gap_spec
    names = list(bench.objects)
    source = FieldSource(load_fields(fields, resolve_device(bench.device)), names, list(gap.lighting), SourceConfig(size=bench.size, seed=1))
    train = draw_training_set(initial_psi(gap, init), {o: bench.pretrain_per_object for o in names}, source,
                              torch.Generator().manual_seed(derive_seed(0, "pretrain")), tau=None)
    model = train_from_scratch(bench, TensorDetectionData(train.images, train.targets, names), bench.pretrain_epochs,
                               seed=0, show_progress=True)
    with staged_output_dir(out) as stage:
        save_detector(model, stage)


def train_from_scratch(bench: BenchConfig, data, epochs: int, seed: int, show_progress: bool = False):
    """A detector of `bench.detector` built from scratch and trained on `data` (every parameter, lr 1e-3, batches
    of 16): the pre-training of every recipe, and the reference trainings of the headroom and substitution runs."""
    from neuralsim.tasks.detector import build_from_config
    from neuralsim.tasks.train import train_detector

    names = list(bench.objects)
    config = dataclasses.replace(bench.detector, num_classes=len(names), category_names=names, image_size=bench.size)
    model = build_from_config(config, seed=seed).to(resolve_device(bench.device))
    train_detector(model, data, TrainConfig(epochs=epochs, trainable="all", lr=1e-3, batch_size=16, seed=seed),
                   show_progress=show_progress)
    return model


RETRAIN_STREAM = ("headroom", "learned")
"""The random numbers of a retraining under detector seed s: derive_seed(s, *RETRAIN_STREAM). They are those of
`benchmarks/bench_gap_headroom.py --psi`, so a bench's retraining and that script's give the same numbers."""


def train_on_psi(bench: BenchConfig, source, test, psi: Psi, seed: int, per_object: int, epochs: int,
                 draw_seed: int | None = None) -> dict:
    """A detector trained from scratch (`train_from_scratch`, detector seed `seed`) on `per_object` field renders
    per object drawn discretely from ψ, scored on `test`: AP, AP50 and per-class numbers. The draws (Gumbel noise,
    in-bin jitter, shifts, backgrounds) come from `draw_seed` alone (default: the `RETRAIN_STREAM` of `seed`), so two
    ψ trained under one seed share every random number and differ only where ψ does."""
    from neuralsim.bilevel.data import draw_training_set
    from neuralsim.tasks.data import TensorDetectionData
    from neuralsim.tasks.evaluate import evaluate_detector

    names = list(bench.objects)
    draw_seed = derive_seed(seed, *RETRAIN_STREAM) if draw_seed is None else draw_seed
    train = draw_training_set(psi, {o: per_object for o in names}, source, torch.Generator().manual_seed(draw_seed), None)
    model = train_from_scratch(bench, TensorDetectionData(train.images, train.targets, names), epochs, seed)
    result = evaluate_detector(model, test)
    return {"ap": result.ap, "ap50": result.ap50, "per_class": result.per_class}


def retrain_cell(bench: BenchConfig, prepared: Prepared, psi_path: Path, seed: int, out: Path) -> Path:
    """Train and score a detector on data drawn from the ψ in `psi_path` (`train_on_psi`, the bench's retraining
    sizes) and write the result to `out` (JSON): a plain function of its inputs and that file. A file already
    holding the result of the same ψ, sizes, fields and test set is reused."""
    from neuralsim.bilevel.field_source import FieldSource, load_fields
    from neuralsim.tasks.data import CocoDetectionData

    psi = Psi.load(psi_path)
    spec = {"psi": psi.to_json(), "seed": seed, "per_object": bench.retrain_per_object, "epochs": bench.retrain_epochs,
            "fields": prepared.fields, "test": prepared.test, "detector": to_plain(bench.detector)}
    spec = json.loads(dumps_json(spec))  # as it reads back from the file
    if out.is_file() and read_json(out, "Retraining result").get("spec") == spec:
        return out
    source = FieldSource(load_fields(prepared.fields, resolve_device(bench.device)), list(bench.objects),
                         list(bench.gap_spec.lighting), SourceConfig(size=bench.size, seed=1))
    result = train_on_psi(bench, source, CocoDetectionData.load(prepared.test), psi, seed, bench.retrain_per_object,
                          bench.retrain_epochs)
    return atomic_write_json(out, {"spec": spec, **result})


def run_config(bench: BenchConfig, prepared: Prepared, init: str, method: str, seed: int, psi_path: Path) -> OptimizeConfig:
    """The optimize config of one cell of the grid (same detector training for every method)."""
    from neuralsim.bilevel.estimators import HypergradientConfig
    from neuralsim.bilevel.inverse_hvp import InverseHVPConfig
    from neuralsim.sampling.optim import PsiOptimizerConfig

    gap = bench.gap_spec
    estimator = method if method in ("nso", "autosim", "influence") else "nso"
    return OptimizeConfig(
        fields=prepared.fields, val=prepared.val, test=prepared.test, psi=str(psi_path), shots=prepared.shots,
        factors=[gap.factor], psi_objects=list(gap.biased) if bench.psi_objects == "biased" else None,
        method=method, steps=bench.steps, images_per_object=bench.images_per_object,
        source=SourceConfig(size=bench.size, seed=seed), detector=bench.detector, detector_init=prepared.detectors[init],
        train=bench.train, hypergradient=HypergradientConfig(
            method=estimator, tau=bench.tau, pathwise_labels=bench.pathwise_labels, paired_probes=bench.paired_probes,
            inverse_hvp=InverseHVPConfig(damping=bench.damping, iterations=bench.cg_iterations)),
        psi_optimizer=PsiOptimizerConfig(method=bench.psi_optimizer, lr=bench.psi_lr, natural=bench.psi_natural,
                                         per_object=bench.psi_per_object, gate=bench.psi_gate),
        hvp_images=bench.hvp_images,
        seed=seed, device=bench.device)


def run_cell(config: OptimizeConfig, out: Path) -> Path:
    """Run (or finish, extend to more steps, or reuse) one optimize run in `out`: a plain function of its
    config and folder. A folder holding a run of any other config is an error, never silently mixed in."""
    state = out / "checkpoint" / "state.json"
    resume = (out / "config.json").is_file()
    if resume:
        # read back through the dataclass, so that a setting added since the run began counts at its default
        stored = to_plain(from_plain(OptimizeConfig, read_json(out / "config.json", "Run config"), f"{out}/config.json"))
        wanted = to_plain(config)
        # any device; ψ₀'s file by where it is, so a bench called once with a relative and once with an absolute
        # --out (from the same folder) finds its own runs
        same = {"steps": None, "device": None}
        if ({**stored, **same, "psi": str(Path(stored["psi"]).absolute())}
                != {**wanted, **same, "psi": str(Path(wanted["psi"]).absolute())}):
            raise UserError(f"{out} holds a run of another configuration; remove it or choose another --out.")
        done = read_json(state, "Checkpoint")["step"] + 1 if state.is_file() else 0
        if done == config.steps:
            return out
        if done > config.steps:
            raise UserError(f"{out} already ran {done} outer steps, more than the {config.steps} asked for.")
        atomic_write_json(out / "config.json", wanted)  # the same run, extended
    return BilevelRun(config, out, resume=resume).run_all()


GRID_SETTINGS = ("methods", "inits", "seeds", "steps", "device", "retrain_per_object", "retrain_epochs")
"""Bench settings that may change between calls on one folder: they add runs or extend them, or add retrainings after
them, never alter one (a run begun on one device continues on another). The cache is not among them: the runs name
its files."""


def check_same_bench(bench: BenchConfig, out: Path) -> None:
    """Refuse, before anything is written, a folder that holds a benchmark of other settings (gap, objects, sizes,
    detector, ψ step…): its runs and summary would be mixed with this one's."""
    record = out / "bench.json"
    if not record.is_file():
        return
    stored = to_plain(from_plain(BenchConfig, read_json(record, "Benchmark record").get("bench", {}), str(record)))
    wanted = to_plain(bench)
    differs = sorted(k for k in wanted if k not in GRID_SETTINGS and stored.get(k) != wanted[k])
    if differs:
        raise UserError(f"{out} holds a benchmark with other settings ({', '.join(differs)} differ); remove it or "
                        "choose another --out.")


def run_bench(bench: BenchConfig, out: str | Path, log=print) -> Path:
    """Prepare, run the grid of (init × method × seed), and write the comparison report."""
    from neuralsim.experiments.bench_report import write_bench_report

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder.")
    if not bench.inits:
        raise UserError("The bench names no ψ initialisation (inits) to run.")
    check_same_bench(bench, out)
    prepared = prepare(bench, log)
    atomic_write_json(out / "bench.json", {"bench": to_plain(bench), "prepared": to_plain(prepared)})
    gap = bench.gap_spec
    for init in bench.inits:
        psi_path = initial_psi(gap, init).save(out / "psi0" / f"{init}.json")
        for method in bench.methods:
            for seed in bench.seeds:
                log(f"run: init {init}, method {method}, seed {seed}")
                run_cell(run_config(bench, prepared, init, method, seed, psi_path), out / "runs" / f"{init}-{method}-s{seed}")
        if bench.retrain_per_object:
            for seed in bench.seeds:
                # NS never moves ψ: its retraining is the control's, ψ₀ on the same random numbers
                for method in ["psi0"] + [m for m in bench.methods if m != "ns"]:
                    log(f"retrain from scratch: init {init}, {'ψ₀' if method == 'psi0' else method}, seed {seed}")
                    psi = psi_path if method == "psi0" else out / "runs" / f"{init}-{method}-s{seed}" / "psi.json"
                    retrain_cell(bench, prepared, psi, seed, out / "retrain" / f"{init}-{method}-s{seed}.json")
    return write_bench_report(out)
