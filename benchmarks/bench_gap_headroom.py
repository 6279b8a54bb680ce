"""How much a gap can give, and how much a learned ψ gives: detectors trained from scratch on field renders
drawn from ψ₀ = same, uniform or different — or from a ψ file, e.g. the final ψ of an optimize run — scored on
the gap's test set. AP(same) − AP(different) of the biased objects bounds what any ψ optimisation can recover
from the `different` start at this detector budget; AP(learned ψ) − AP(different) is what it did recover when
the learned ψ is used as intended, to make a training set for a detector trained from scratch.

    .venv/bin/python benchmarks/bench_gap_headroom.py --gap pose --inits same,different --seeds 0,1 --epochs 30 \
        [--psi influence-s0=runs/different-influence-s0/psi.json] [--demo | --config BENCH.json] \
        [--out benchmarks/results/headroom-pose.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from neuralsim.bilevel.field_source import FieldSource
from neuralsim.experiments.bench import RETRAIN_STREAM, score_psi
from neuralsim.experiments.cli import script_bench
from neuralsim.experiments.prepare import field_source, initial_psi, prepare
from neuralsim.experiments.recipes import BenchConfig, recipe
from neuralsim.runtime import atomic_write_json, derive_seed
from neuralsim.sampling.psi import Psi
from neuralsim.tasks.data import CocoDetectionData


def train_and_score(bench: BenchConfig, source: FieldSource, test: CocoDetectionData, init: str, seed: int,
                    per_object: int, epochs: int, psi_files: dict[str, str]) -> dict:
    psi = Psi.load(psi_files[init]) if init in psi_files else initial_psi(bench.gap_spec, init)
    # every ψ file shares one stream (RETRAIN_STREAM, as a bench's retraining), each initialisation its own
    stream = RETRAIN_STREAM if init in psi_files else ("headroom", init)
    return score_psi(bench, source, test, psi, seed, per_object, epochs, draw_seed=derive_seed(seed, *stream))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", default="pose")
    parser.add_argument("--inits", default="same,different")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--per-object", type=int, default=80)
    parser.add_argument("--psi", action="append", default=[], metavar="NAME=FILE",
                        help="also train on data drawn from this ψ file (repeatable)")
    parser.add_argument("--demo", action="store_true", help="the demo's four objects and sizes")
    parser.add_argument("--config", default=None, help="a bench config JSON: its gap, objects, sizes and detector")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    start = time.perf_counter()
    bench = script_bench(args.config, args.gap, args.demo, args.cache)
    if args.demo and not args.config:  # the demo's objects and sizes, the recipes' detector (as measured)
        bench.optimize.detector = recipe(bench.gap).optimize.detector
    bench.inits = []  # no pre-trained detectors needed here
    prepared = prepare(bench)
    source = field_source(bench, prepared.fields)
    test = CocoDetectionData.load(prepared.test)
    psi_files = dict(item.split("=", 1) for item in args.psi)
    inits = [i for i in args.inits.split(",") if i] + list(psi_files)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for init in inits:
            tick = time.perf_counter()
            row = {"init": init, "seed": seed, **train_and_score(bench, source, test, init, seed, args.per_object,
                                                                   args.epochs, psi_files), "seconds": time.perf_counter() - tick}
            runs.append(row)
            print(json.dumps({k: row[k] for k in ("init", "seed", "ap", "ap50", "seconds")}
                             | {o: row["per_class"][o]["ap"] for o in bench.biased}), flush=True)
    summary = {}
    for init in inits:
        for obj in bench.biased:
            aps = [r["per_class"][obj]["ap"] for r in runs if r["init"] == init]
            summary[f"{init}/{obj}"] = {"mean": statistics.mean(aps), "sd": statistics.stdev(aps) if len(aps) > 1 else 0.0}
    result = {"gap": bench.gap, "objects": bench.objects, "biased": bench.biased, "epochs": args.epochs,
              "per_object": args.per_object, "test_per_object": bench.test_per_object, "machine": platform.machine(),
              "runs": runs, "summary": summary, "seconds": time.perf_counter() - start}
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
