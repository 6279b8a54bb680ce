"""Per object of a bench: is ψ's step signal or noise, and does it lower that object's own loss? From the runs'
metrics.jsonl: the mean cosine between consecutive steps' natural-gradient directions (≈ 0 for noise, → 1 for a
steady signal), the object's validation and test loss per class against the NS runs' (last steps), its final
mass in the test distribution's bins, and its test AP against NS.

    .venv/bin/python benchmarks/psi_signal.py BENCH_DIR --method influence [--out signal.json]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from neuralsim.experiments.bench_report import TAIL, load_runs
from neuralsim.experiments.gaps import GAPS, target_probs
from neuralsim.runtime import atomic_write_json, read_json


def natural_direction(h: list[float], p: list[float]) -> np.ndarray:
    """The step direction the natural-gradient ψ optimiser takes from the logit gradient h at probabilities p."""
    d = np.asarray(h) / np.clip(np.asarray(p), 1e-12, None)
    return d - d.mean()


def consecutive_cosine(metrics: list[dict], obj: str, factor: str) -> float:
    """Mean cosine between the step directions of consecutive outer steps."""
    dirs = [natural_direction(m["hypergradient"][f"{obj}/{factor}"], m["psi"][obj][factor]) for m in metrics]
    cos = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)) for a, b in zip(dirs, dirs[1:])]
    return float(np.mean(cos))


def tail(metrics: list[dict], key: str, obj: str) -> float:
    values = [m[key][obj] for m in metrics[-TAIL:]]
    return float(np.mean([0.0 if v is None else v for v in values]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path)
    ap.add_argument("--method", default="influence")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    bench = read_json(args.bench / "bench.json", "Benchmark record")["bench"]
    gap = GAPS[bench["gap"]]
    gap_spec = dataclasses.replace(gap, objects=tuple(bench["objects"]), biased=tuple(bench["biased"]))
    runs = load_runs(args.bench)
    ns = {seed: m for (_, method, seed), m in runs.items() if method == "ns"}
    ours = {seed: m for (_, method, seed), m in runs.items() if method == args.method}
    rows = []
    for obj in bench["objects"]:
        target = np.asarray(target_probs(gap_spec, obj)) > 0
        row = {"object": obj, "cos": [], "target_mass": [], "d_val": [], "d_test": [], "d_ap": []}
        for seed, metrics in ours.items():
            row["cos"].append(consecutive_cosine(metrics, obj, gap.factor))
            row["target_mass"].append(float(np.asarray(metrics[-1]["psi_after"][obj][gap.factor])[target].sum()))
            if seed in ns:
                row["d_val"].append(tail(metrics, "val_loss_per_class", obj) - tail(ns[seed], "val_loss_per_class", obj))
                row["d_test"].append(tail(metrics, "test_loss_per_class", obj) - tail(ns[seed], "test_loss_per_class", obj))
                ap_of = lambda ms: float(np.mean([m["per_class"][obj]["ap"] or 0.0 for m in ms[-TAIL:]]))  # noqa: E731
                row["d_ap"].append(100 * (ap_of(metrics) - ap_of(ns[seed])))
        rows.append({k: (float(np.mean(v)) if isinstance(v, list) and v else v) for k, v in row.items()})
    seeds = sorted(ours)
    print(f"{args.method} against ns, seeds {seeds} (seeds with an ns run for the differences: {sorted(set(ns) & set(ours))})")
    print("| object | cos of consecutive steps | ψ mass in the test bins | Δ val loss | Δ test loss | Δ test AP |")
    print("|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["cos"]):
        cells = [f"{r[k]:+.3f}" if isinstance(r[k], float) else "—" for k in ("d_val", "d_test")]
        d_ap = f"{r['d_ap']:+.1f}" if isinstance(r["d_ap"], float) else "—"
        print(f"| {r['object']} | {r['cos']:.2f} | {r['target_mass']:.2f} | {cells[0]} | {cells[1]} | {d_ap} |")
    if args.out:
        atomic_write_json(args.out, {"bench": str(args.bench), "method": args.method, "seeds": seeds, "rows": rows})


if __name__ == "__main__":
    main()
