"""Replay a bench's recorded hypergradients through other ψ optimisers, offline (issue 6, the ψ step).

Each run's metrics.jsonl holds the hypergradient of every outer step. Stepping ψ₀ through them with the run's own
optimiser must reproduce the ψ it recorded (checked, to 1e-6); the same hypergradients through the `gated` step at
several thresholds show where ψ would have ended had it been stepped that way. This is an approximation only: in a
real gated run the later hypergradients are taken at the gated ψ, not the plain one. Per seed and threshold: how
many objects end with ≥ 0.5 of their mass in the test bins, how many still have ≥ 0.5 in ψ₀'s dominant bin, how
many elsewhere.

    .venv/bin/python benchmarks/replay_psi_steps.py BENCH_DIR [--method influence] [--gates 0,0.5,1,1.5,2]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from neuralsim.experiments.bench_report import load_runs
from neuralsim.experiments.gaps import GAPS, target_probs
from neuralsim.runtime import atomic_write_json, read_json
from neuralsim.sampling.optim import PsiOptimizer, PsiOptimizerConfig
from neuralsim.sampling.psi import Psi


def moved_to(h: list[float], p_then: list[float], p_now: torch.Tensor) -> torch.Tensor:
    """A logit gradient recorded at probabilities p_then, as the logit gradient at p_now of the same ∂L/∂p.

    The logits' gradient is p ⊙ (g − p·g) with g = ∂L/∂p; g is what the detector's state determines (for
    `influence` it is −(n_o/N)·m), defined up to a constant, which this map ignores."""
    g = torch.tensor(h, dtype=p_now.dtype) / torch.tensor(p_then, dtype=p_now.dtype).clamp_min(1e-300)
    return p_now * (g - (p_now * g).sum())


def replay(psi0: Psi, factor: str, metrics: list[dict], config: PsiOptimizerConfig) -> list[dict]:
    """ψ's probabilities after each recorded step, stepped by `config` from ψ₀."""
    psi = Psi.from_json(psi0.to_json()).set_trainable([factor])
    optimizer, path = PsiOptimizer(psi, config), []
    for m in metrics:
        grads = {}
        for name in psi.trainable():
            obj = name.rsplit("/", 1)[0]
            grads[name] = moved_to(m["hypergradient"][name], m["psi"][obj][factor],
                                   psi.objects[obj].factors[factor].probs().detach())
        optimizer.step(grads)
        path.append(psi.probabilities())
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path)
    ap.add_argument("--method", default="influence")
    ap.add_argument("--gates", default="0,0.5,1,1.5,2")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    bench = read_json(args.bench / "bench.json", "Benchmark record")["bench"]
    gap = dataclasses.replace(GAPS[bench["gap"]], objects=tuple(bench["objects"]), biased=tuple(bench["biased"]))
    result = {"bench": str(args.bench), "method": args.method, "runs": {}}
    for (init, method, seed), metrics in sorted(load_runs(args.bench).items()):
        if method != args.method:
            continue
        run = read_json(args.bench / "runs" / f"{init}-{method}-s{seed}" / "config.json", "Run config")
        psi0 = Psi.load(run["psi"])
        own = PsiOptimizerConfig(**{k: tuple(v) if k == "betas" else v for k, v in run["psi_optimizer"].items()})
        recorded = replay(psi0, gap.factor, metrics, own)
        error = max(abs(np.asarray(p[o][gap.factor]) - np.asarray(m["psi_after"][o][gap.factor])).max()
                    for p, m in zip(recorded, metrics) for o in gap.objects)
        if error > 1e-6:
            raise SystemExit(f"{init} seed {seed}: replaying with the run's own optimiser is off by {error:.2g}; "
                             "the metrics do not match its config")
        rows = {}
        for gate in (float(g) for g in args.gates.split(",")):
            config = dataclasses.replace(own, method="gated", gate=gate)
            final = replay(psi0, gap.factor, metrics, config)[-1]
            counts = {"target": 0, "psi0_bin": 0, "elsewhere": 0}
            per_object = {}
            for o in gap.objects:
                p, p0 = np.asarray(final[o][gap.factor]), np.asarray(psi0.probabilities()[o][gap.factor])
                target = float(p[np.asarray(target_probs(gap, o)) > 0].sum())
                # ψ₀'s dominant bin; a ψ₀ without one (uniform) has none to stay in
                dominant = float(p[p0.argmax()]) if np.sum(p0 == p0.max()) == 1 else None
                per_object[o] = {"target": target, "psi0_bin": dominant}
                counts["target" if target >= 0.5 else "psi0_bin" if (dominant or 0) >= 0.5 else "elsewhere"] += 1
            rows[gate] = {"counts": counts, "per_object": per_object}
            print(f"{init} seed {seed}, gate {gate:g}: {counts['target']} objects at the test bins, {counts['psi0_bin']} "
                  f"at ψ₀'s bin, {counts['elsewhere']} elsewhere")
        result["runs"][f"{init}-s{seed}"] = {"replay_error": error, "gates": rows}
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
