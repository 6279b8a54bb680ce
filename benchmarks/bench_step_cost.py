"""Cost of one outer step of the bilevel loop (issue 6): wall time of each phase — pass 1 render, detector
training, ∇θL_val, v by CG, e_j, pass 2 (patch-wise render VJP), evaluation — and the peak memory, at several
image sizes with a fixed patch size. Each size runs one real `BilevelRun` step in a fresh process, so its peak
resident memory is its own.

The six paper objects' fields are fitted once at 64 px (a field renders at any size); validation and test sets
are path-traced at each size. The detector is built from scratch (the cost of a step does not depend on its
weights); everything else is the recipes' setting (pose gap, ψ₀ = different, `nso` with moving labels).

    .venv/bin/python benchmarks/bench_step_cost.py --sizes 64,128,256 --images-per-object 50 \
        --out benchmarks/results/step-cost.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from neuralsim.bilevel.config import OptimizeConfig, load_config
from neuralsim.bilevel.estimators import SecondOrderConfig
from neuralsim.bilevel.loop import BilevelRun
from neuralsim.clock import peak_memory_mb
from neuralsim.data.coco import load_coco
from neuralsim.experiments.prepare import ensure_fields, ensure_target_set, initial_psi
from neuralsim.experiments.recipes import BenchConfig, demo
from neuralsim.runtime import atomic_write_json, derive_seed, to_plain
from neuralsim.tasks.checkpoint import save_detector
from neuralsim.tasks.detector import build_from_config

PHASES = {  # metrics key → the phase of the breakdown
    "render": "render (pass 1)", "train": "train", "val_grad": "∇θL_val", "inverse_hvp": "v (CG)",
    "mixed": "e_j", "render_vjp": "pass 2 (patch-wise)", "evaluate": "evaluate",
}


def prepare(bench: BenchConfig, sizes: list[int], log=print) -> tuple[dict[str, str], dict[int, dict[str, str]]]:
    """Fields fitted at the bench's size, and validation/test sets at every size; cached."""
    fields = ensure_fields(bench, log)
    sets = {}
    for size in sizes:
        log(f"ground-truth validation and test sets at {size} px")
        sets[size] = {split: str(ensure_target_set(bench, split, n, size))
                      for split, n in (("val", bench.val_per_object), ("test", bench.test_per_object))}
    return fields, sets


def scratch_detector(bench: BenchConfig, val: str, size: int, out: Path) -> Path:
    """The bench's detector for the classes of `val` at `size` px, built from scratch (initial weights from the
    run's seed 0) and saved in `out`: a step costs the same whatever the weights."""
    names = list(load_coco(val).category_names)
    config = dataclasses.replace(bench.optimize.detector, num_classes=len(names), category_names=names, image_size=size)
    return save_detector(build_from_config(config, seed=derive_seed(0, "detector")), out)


def step_config(bench: BenchConfig, fields: dict[str, str], sets: dict[str, str], size: int, patch_rays: int,
                replay_batch: int, psi_path: Path, detector: Path) -> OptimizeConfig:
    nso = bench.with_methods(["nso"]).methods[0]
    return dataclasses.replace(
        bench.optimize, fields=fields, val=sets["val"], test=sets["test"], psi=str(psi_path),
        factors=[bench.gap_spec.factor], method=nso, steps=1,
        hypergradient=dataclasses.replace(bench.optimize.hypergradient, replay_batch=replay_batch),
        source=dataclasses.replace(bench.optimize.source, size=size, patch_rays=patch_rays),
        detector_init=str(detector), device=bench.device)


def one_step(config_path: Path, out: Path) -> dict:
    """Run step 0 of the config in this process: its seconds and peak memory per phase, and the peak memory of
    the set-up before it (fields, validation and test sets, detector)."""
    run = BilevelRun(load_config(config_path), out)
    set_up = peak_memory_mb(run.device)
    record = run.step(0)
    return {"seconds": record.seconds, "peak_memory_mb": record.peak_memory_mb_by_phase, "set_up_peak_mb": set_up,
            "cg_residual": record.cg_residual}


def tables(rows: list[dict]) -> str:
    """Seconds per phase, and peak resident memory (MiB) per phase: each phase's own high-water mark, which
    includes whatever the process holds at the time (the training set among it)."""
    def markdown(head: list[str], body: list[list[str]]) -> list[str]:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in body)]

    time_rows = [[str(r["size"]), str(r["images"]), *(f"{r['seconds'].get(k, 0.0):.1f}" for k in PHASES),
                  f"{r['seconds']['total']:.1f}"] for r in rows]
    memory_rows = [[str(r["size"]), f"{r['set_up_peak_mb']:.0f}", *(f"{r['peak_memory_mb'].get(k, 0.0):.0f}" for k in PHASES),
                    f"{max(r['peak_memory_mb'].values()):.0f}"] for r in rows]
    return "\n".join(markdown(["px", "images", *PHASES.values(), "total s"], time_rows) + [""]
                     + markdown(["px", "set-up", *PHASES.values(), "step"], memory_rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--objects", default="paper", help="'paper' (the six) or 'demo' (the demo's four)")
    ap.add_argument("--images-per-object", type=int, default=50)
    ap.add_argument("--patch-rays", type=int, default=1024)
    ap.add_argument("--replay-batch", type=int, default=SecondOrderConfig.replay_batch, help="images per e_j batch in pass 2")
    ap.add_argument("--fpn-channels", type=int, default=None, help="the detector's pyramid and head channels (default: the recipes')")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", nargs=2, metavar=("CONFIG", "RUN_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one_step(Path(args.child[0]), Path(args.child[1]))))
        return

    small = demo("pose")
    assets = {k: getattr(small, k) for k in ("size", "capture_views", "fit_steps", "fit_rays", "val_per_object",
                                             "test_per_object", "target_spp")}  # assets of the demo's size
    bench = BenchConfig(gap="pose", **assets)
    bench.optimize.images_per_object = args.images_per_object
    if args.fpn_channels:
        bench.optimize.detector = dataclasses.replace(bench.optimize.detector, fpn_channels=args.fpn_channels)
    if args.objects == "demo":
        bench.objects = list(small.objects)
    sizes = [int(s) for s in args.sizes.split(",")]
    fields, sets = prepare(bench, sizes)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        psi_path = initial_psi(bench.gap_spec, "different").save(Path(tmp) / "psi0.json")
        for size in sizes:
            detector = scratch_detector(bench, sets[size]["val"], size, Path(tmp) / f"detector-{size}")
            config_path = atomic_write_json(Path(tmp) / f"config-{size}.json",
                                            to_plain(step_config(bench, fields, sets[size], size, args.patch_rays,
                                                                 args.replay_batch, psi_path, detector)))
            print(f"one outer step at {size} px …", flush=True)
            done = subprocess.run([sys.executable, __file__, "--child", str(config_path), str(Path(tmp) / f"run-{size}")],
                                  check=True, capture_output=True, text=True)
            row = {"size": size, "images": args.images_per_object * len(bench.objects), **json.loads(done.stdout.splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"objects": bench.objects, "method": "nso", "patch_rays": args.patch_rays, "replay_batch": args.replay_batch,
              "fpn_channels": bench.optimize.detector.fpn_channels,
              "bench": to_plain(bench),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "torch_threads": os.environ.get("OMP_NUM_THREADS"),
              "rows": rows}
    if args.out:
        atomic_write_json(args.out, result)
    print(tables(rows))


if __name__ == "__main__":
    main()
