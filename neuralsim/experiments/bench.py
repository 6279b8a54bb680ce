"""The benchmark grid: every (initialisation, method, seed) as its own optimize run, each optionally judged by a
detector retrained from scratch on its final ψ against ψ₀ on the same random numbers. Each run and each
retraining is a plain function of its inputs and its files, reused when they match."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from neuralsim.bilevel.config import OptimizeConfig
from neuralsim.bilevel.loop import BilevelRun
from neuralsim.bilevel.pretrain import train_on_psi
from neuralsim.errors import UserError
from neuralsim.experiments.prepare import Prepared, field_source, initial_psi, prepare
from neuralsim.experiments.recipes import BenchConfig, bench_from_plain
from neuralsim.runtime import (
    atomic_write_json,
    derive_seed,
    dumps_json,
    read_json,
    resolve_device,
    to_plain,
)
from neuralsim.sampling.psi import Psi
from neuralsim.schema import from_plain
from neuralsim.tasks.data import CocoDetectionData
from neuralsim.tasks.evaluate import evaluate_detector

RETRAIN_STREAM = ("headroom", "learned")
"""The random numbers of a retraining under detector seed s: derive_seed(s, *RETRAIN_STREAM). They are those of
`benchmarks/bench_gap_headroom.py --psi`, so a bench's retraining and that script's give the same numbers."""

GRID_SETTINGS = ("methods", "inits", "seeds", "device", "retrain_per_object", "retrain_epochs")
"""Bench settings that may change between calls on one folder (with `optimize.steps`): they add runs or extend
them, or add retrainings after them, never alter one. The cache is not among them: the runs name its files."""


def run_config(bench: BenchConfig, prepared: Prepared, init: str, method: str, seed: int, psi_path: Path) -> OptimizeConfig:
    """The optimize config of one cell of the grid: the bench's optimize settings with the cell's inputs."""
    gap = bench.gap_spec
    return dataclasses.replace(
        bench.optimize, fields=prepared.fields, val=prepared.val, test=prepared.test, psi=str(psi_path),
        shots=prepared.shots, detector_init=prepared.detectors[init], factors=[gap.factor],
        psi_objects=list(gap.biased) if bench.psi_objects == "biased" else None,
        method=next(m for m in bench.methods if m.method == method), seed=seed, device=bench.device)


def run_cell(config: OptimizeConfig, out: Path) -> Path:
    """Run (or finish, extend to more steps, or reuse) one optimize run in `out`. A folder holding a run of any
    other config is an error, never silently mixed in."""
    state = out / "checkpoint" / "state.json"
    resume = (out / "config.json").is_file()
    if resume:
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


def score_psi(bench: BenchConfig, source, test, psi: Psi, seed: int, per_object: int, epochs: int,
              draw_seed: int | None = None) -> dict:
    """A detector trained from scratch (detector seed `seed`) on `per_object` field renders per object drawn from ψ,
    scored on `test`: AP, AP50 and per-class numbers. The draws come from `draw_seed` alone (default: the
    `RETRAIN_STREAM` of `seed`), so two ψ under one seed share every random number."""
    draw_seed = derive_seed(seed, *RETRAIN_STREAM) if draw_seed is None else draw_seed
    model = train_on_psi(bench.optimize.detector, psi, source, list(bench.objects), bench.size, per_object, epochs,
                         seed, draw_seed, resolve_device(bench.device))
    result = evaluate_detector(model, test)
    return {"ap": result.ap, "ap50": result.ap50, "per_class": result.per_class}


def retrain_cell(bench: BenchConfig, prepared: Prepared, psi_path: Path, seed: int, out: Path) -> Path:
    """`score_psi` of the ψ in `psi_path` at the bench's retraining sizes, written to `out` (JSON). A file already
    holding the result of the same ψ, sizes, fields and test set is reused."""
    psi = Psi.load(psi_path)
    spec = {"psi": psi.to_json(), "seed": seed, "per_object": bench.retrain_per_object, "epochs": bench.retrain_epochs,
            "fields": prepared.fields, "test": prepared.test, "detector": to_plain(bench.optimize.detector)}
    spec = json.loads(dumps_json(spec))  # as it reads back from the file
    if out.is_file() and read_json(out, "Retraining result").get("spec") == spec:
        return out
    result = score_psi(bench, field_source(bench, prepared.fields), CocoDetectionData.load(prepared.test), psi, seed,
                       bench.retrain_per_object, bench.retrain_epochs)
    return atomic_write_json(out, {"spec": spec, **result})


def check_same_bench(bench: BenchConfig, out: Path) -> None:
    """Refuse, before anything is written, a folder that holds a benchmark of other settings: its runs and summary
    would be mixed with this one's."""
    record = out / "bench.json"
    if not record.is_file():
        return
    stored = to_plain(bench_from_plain(read_json(record, "Benchmark record").get("bench", {}), str(record)))
    wanted = to_plain(bench)
    stored["optimize"]["steps"] = wanted["optimize"]["steps"]
    differs = sorted(k for k in wanted if k not in GRID_SETTINGS and stored.get(k) != wanted[k])
    if differs:
        raise UserError(f"{out} holds a benchmark with other settings ({', '.join(differs)} differ); remove it or "
                        "choose another --out.")


@dataclass
class Piece:
    """One piece of the grid for an executor: an optimize run (`config` into `out`) followed, if `retrain` is given,
    by the retraining of its final ψ, or a retraining alone (ψ₀'s control). `retrain` is (ψ file, detector seed,
    result file); `needs` the files the piece reads."""

    label: str
    config: OptimizeConfig | None
    out: Path | None
    retrain: tuple[Path, int, Path] | None
    needs: list[str]


def run_piece(bench: BenchConfig, prepared: Prepared, piece: Piece) -> None:
    if piece.config is not None:
        run_cell(piece.config, piece.out)
    if piece.retrain is not None:
        retrain_cell(bench, prepared, *piece.retrain)


def grid_pieces(bench: BenchConfig, prepared: Prepared, out: Path, psi_paths: dict[str, Path]) -> list[Piece]:
    """The grid's pieces, longest first: each (init, method, seed) run with its own retraining, then the ψ₀
    controls. NS never moves ψ: its retraining is the control's, ψ₀ on the same random numbers."""
    methods = [m.method for m in bench.methods]
    inputs = [str(out / "bench.json"), *prepared.fields.values(), prepared.val, prepared.test,
              *([prepared.shots] if prepared.shots else [])]
    pieces = []
    for init in bench.inits:
        for method in methods:
            for seed in bench.seeds:
                cell = out / "runs" / f"{init}-{method}-s{seed}"
                retrain = (cell / "psi.json", seed, out / "retrain" / f"{init}-{method}-s{seed}.json") \
                    if bench.retrain_per_object and method != "ns" else None
                pieces.append(Piece(f"run: init {init}, method {method}, seed {seed}"
                                    + (", then retrain from scratch on its ψ" if retrain else ""),
                                    run_config(bench, prepared, init, method, seed, psi_paths[init]), cell, retrain,
                                    [*inputs, str(psi_paths[init]), prepared.detectors[init]]))
    if bench.retrain_per_object:
        for init in bench.inits:
            for seed in bench.seeds:
                pieces.append(Piece(f"retrain from scratch: init {init}, ψ₀, seed {seed}", None, None,
                                    (psi_paths[init], seed, out / "retrain" / f"{init}-psi0-s{seed}.json"),
                                    [*inputs, str(psi_paths[init])]))
    return pieces


def run_bench(bench: BenchConfig, out: str | Path, log=print, executor=None) -> Path:
    """Prepare, run the grid of (init × method × seed), retrain if asked, and write the comparison report. The
    preparation's pieces, the runs and the retrainings go through `executor` (default: one after another here);
    the summary and report are written once all are done, from the files."""
    from neuralsim.distributed import Serial, gpus_per_task
    from neuralsim.experiments.bench_report import write_bench_report

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder.")
    if not bench.inits:
        raise UserError("The bench names no ψ initialisation (inits) to run.")
    check_same_bench(bench, out)
    executor = executor or Serial()
    prepared = prepare(bench, log, executor)
    atomic_write_json(out / "bench.json", {"bench": to_plain(bench), "prepared": to_plain(prepared)})
    psi_paths = {init: initial_psi(bench.gap_spec, init).save(out / "psi0" / f"{init}.json") for init in bench.inits}
    pieces = grid_pieces(bench, prepared, out, psi_paths)
    for _ in executor.map_unordered(partial(run_piece, bench, prepared), pieces, num_gpus=gpus_per_task(bench.device),
                                    name=lambda p: p.label, needs=lambda p: p.needs, log=log,
                                    makes=lambda p, _: [*([p.out / "psi.json"] if p.out else []),
                                                        *([p.retrain[2]] if p.retrain else [])]):
        pass
    return write_bench_report(out)
