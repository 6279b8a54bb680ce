"""Is a learned ψ's retraining gain the ψ's, or the detector seed's? Reads `bench_gap_headroom.py` results in which
several learned ψ (and ψ₀) were each retrained with several seeds, and splits the gain over ψ₀ into the part that
follows the ψ and the part that follows the seed.

    .venv/bin/python benchmarks/retrain_matrix.py RESULTS_DIR/retrain-*.json --psi0 different \
        --psi learned-s0=RESULTS_DIR/psi-influence-s0.json ... [--own influence] [--gap ycb21] [--out matrix.json]

A row named `--own` (default `influence`) at seed k is the ψ learned with seed k, i.e. `learned-s{k}`. The gain of a
cell (ψ, seed) is AP(ψ, seed) − AP(ψ₀, seed): ψ₀ retrained with the same seed, so the detector's initialisation and
batch order are shared. `bench_gap_headroom.py` draws ψ₀'s (`--inits different`) training data from other random
numbers than every ψ file's; ψ₀ given as a file (`--psi psi0-crn=<ψ₀ file>`) is drawn from the same ones, so that
`--psi0 psi0-crn` compares cells in which only ψ differs (common random numbers). Per object, the gain is set against the mass that ψ puts on the object's target bins: if the gain follows the
object's own ψ, the correlation holds across seeds; if it is detector noise, the per-object gains of one ψ under two
seeds agree no better than those of two ψ under one seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
from pathlib import Path

import numpy as np

from neuralsim.experiments.gaps import GAPS, target_probs
from neuralsim.runtime import atomic_write_json, read_json


def load_cells(files: list[Path], own: str) -> dict[tuple[str, int], dict]:
    """(ψ name, seed) → the run's record; later files do not overwrite a cell silently."""
    cells: dict[tuple[str, int], dict] = {}
    for file in files:
        for run in read_json(file, "Retraining result")["runs"]:
            name = f"learned-s{run['seed']}" if run["init"] == own else run["init"]
            key = (name, int(run["seed"]))
            if key in cells:
                raise SystemExit(f"{file}: the cell {key} appears twice")
            cells[key] = run
    return cells


def corr(x: list[float], y: list[float]) -> float:
    return float(np.corrcoef(x, y)[0, 1]) if len(x) > 2 and np.std(x) > 0 and np.std(y) > 0 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--psi0", default="different", help="the cells every gain is taken against (one per seed)")
    ap.add_argument("--psi", action="append", default=[], metavar="NAME=FILE", required=True)
    ap.add_argument("--own", default="influence")
    ap.add_argument("--gap", default="ycb21")
    ap.add_argument("--threshold", type=float, default=0.5, help="target mass that counts as 'reached'")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cells = load_cells(args.files, args.own)
    psi_files = dict(item.split("=", 1) for item in args.psi)
    seeds = sorted({s for (name, s) in cells if name == args.psi0})
    names = [n for n in psi_files if n != args.psi0 and any((n, s) in cells for s in seeds)]
    objects = list(cells[(args.psi0, seeds[0])]["per_class"])
    gap = dataclasses.replace(GAPS[args.gap], objects=tuple(objects), biased=tuple(objects)) if args.gap else None
    mass = {}
    for name in names:
        psi = read_json(Path(psi_files[name]), "ψ file")["objects"]
        mass[name] = {o: float(np.asarray(psi[o][gap.factor]["probs"])[np.asarray(target_probs(gap, o)) > 0].sum())
                      for o in objects}

    table, gains = [], {}
    for name, seed in itertools.product(names, seeds):
        if (name, seed) not in cells:
            continue
        run, base = cells[(name, seed)], cells[(args.psi0, seed)]
        per_obj = {o: 100 * (run["per_class"][o]["ap"] - base["per_class"][o]["ap"]) for o in objects}
        gains[(name, seed)] = per_obj
        reached = [o for o in objects if mass[name][o] >= args.threshold]
        table.append({"psi": name, "seed": seed, "ap": 100 * run["ap"], "ap50": 100 * run["ap50"],
                      "gain_ap": 100 * (run["ap"] - base["ap"]), "gain_ap50": 100 * (run["ap50"] - base["ap50"]),
                      "reached": len(reached),
                      "gain_reached": statistics.mean(per_obj[o] for o in reached) if reached else float("nan"),
                      "gain_rest": statistics.mean(per_obj[o] for o in objects if o not in reached),
                      "corr_mass_gain": corr([mass[name][o] for o in objects], [per_obj[o] for o in objects])})

    print("| ψ | seed | AP / AP50 | gain AP / AP50 over ψ₀ | objects reached | gain reached / rest | corr(mass, gain) |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['psi']} | {r['seed']} | {r['ap']:.1f} / {r['ap50']:.1f} | {r['gain_ap']:+.1f} / {r['gain_ap50']:+.1f}"
              f" | {r['reached']} | {r['gain_reached']:+.1f} / {r['gain_rest']:+.1f} | {r['corr_mass_gain']:.2f} |")
    for seed in seeds:
        base = cells[(args.psi0, seed)]
        print(f"ψ₀ seed {seed}: {100 * base['ap']:.1f} / {100 * base['ap50']:.1f}")

    # Two-way split of the all-class AP gain: ψ main effect, seed main effect, residual.
    full = [(n, s) for n in names for s in seeds if (n, s) in gains]
    g = {k: next(r["gain_ap"] for r in table if (r["psi"], r["seed"]) == k) for k in full}
    grand = statistics.mean(g.values())
    by_psi = {n: statistics.mean(g[(n, s)] for s in seeds if (n, s) in g) for n in names}
    by_seed = {s: statistics.mean(g[(n, s)] for n in names if (n, s) in g) for s in seeds}
    resid = [g[(n, s)] - by_psi[n] - by_seed[s] + grand for (n, s) in full]
    split = {"grand_mean_gain_ap": grand, "gain_by_psi": by_psi, "gain_by_seed": by_seed,
             "sd_psi_effect": statistics.pstdev(by_psi.values()), "sd_seed_effect": statistics.pstdev(by_seed.values()),
             "sd_residual": float(np.sqrt(np.mean(np.square(resid)))), "cells_with_gain": sum(v > 0 for v in g.values()),
             "cells": len(g)}
    print(f"mean gain {grand:+.1f} AP over {len(g)} cells, {split['cells_with_gain']} positive; by ψ "
          + ", ".join(f"{n} {v:+.1f}" for n, v in by_psi.items()) + "; by seed "
          + ", ".join(f"{s} {v:+.1f}" for s, v in by_seed.items()))

    # Per-object agreement: one ψ under two seeds against two ψ under one seed.
    def agreement(pairs):
        values = [corr([gains[a][o] for o in objects], [gains[b][o] for o in objects]) for a, b in pairs]
        return (statistics.mean(values), len(values)) if values else (float("nan"), 0)

    same_psi = [(a, b) for a, b in itertools.combinations(full, 2) if a[0] == b[0]]
    same_seed = [(a, b) for a, b in itertools.combinations(full, 2) if a[1] == b[1]]
    neither = [(a, b) for a, b in itertools.combinations(full, 2) if a[0] != b[0] and a[1] != b[1]]
    agree = {"same_psi_other_seed": agreement(same_psi), "same_seed_other_psi": agreement(same_seed),
             "other_psi_other_seed": agreement(neither)}
    print("per-object gain correlation: " + ", ".join(f"{k} {v[0]:.2f} ({v[1]} pairs)" for k, v in agree.items()))
    pooled_mass = [mass[n][o] for (n, s) in full for o in objects]
    pooled_gain = [gains[(n, s)][o] for (n, s) in full for o in objects]
    print(f"pooled corr(target mass, per-object gain) over {len(pooled_gain)} object-cells: "
          f"{corr(pooled_mass, pooled_gain):.2f}")
    if args.out:
        atomic_write_json(args.out, {"table": table, "split": split, "agreement": agree,
                                     "pooled_corr_mass_gain": corr(pooled_mass, pooled_gain), "target_mass": mass,
                                     "per_object_gain": {f"{n}@{s}": v for (n, s), v in gains.items()}})


if __name__ == "__main__":
    main()
