"""Hypergradient estimators on the toy pose gap (issue 6 item 4): the cosine of single draws with the exact
expected gradient, and how many normalised ψ steps each method needs to move ψ to the target bin.

    .venv/bin/python benchmarks/bench_estimators.py [--draws 30] [--seeds 3] [--write docs/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import torch

from neuralsim.bilevel.data import draw_training_set, full_image_vjp
from neuralsim.bilevel.estimators.autosim import score_function
from neuralsim.bilevel.estimators.influence import influence
from neuralsim.bilevel.estimators.lts import LTSConfig, reinforce
from neuralsim.bilevel.estimators.nso import pathwise
from neuralsim.bilevel.inverse_hvp import InverseHVPConfig, inverse_hvp
from neuralsim.bilevel.toy import ToyProblem, exact_expected_gradient, fit, toy_problem
from neuralsim.runtime import atomic_write_text
from neuralsim.sampling.optim import PsiOptimizer, PsiOptimizerConfig
from neuralsim.sampling.psi import Psi

HEADING = "## Hypergradient estimators (toy problem)"
TARGET_BIN, DOMINANT_BIN = 1, 5
PER_OBJECT = 50  # images per object per step, as in the paper
PROBES = 4  # influence: probe renders per bin
CG = InverseHVPConfig(damping=0.01, iterations=20)  # CG, λ = 0.01, 20 iterations
ESTIMATORS = {  # name → (τ of the training draws or None for discrete, estimator(psi, train, task, v, generator))
    "pathwise τ=0.1": (0.1, lambda toy, psi, train, task, v, g: pathwise(psi, train, task, v, full_image_vjp(toy.render), 10)),
    "pathwise τ=1": (1.0, lambda toy, psi, train, task, v, g: pathwise(psi, train, task, v, full_image_vjp(toy.render), 10)),
    "score function": (None, lambda toy, psi, train, task, v, g: score_function(psi, train, task, v)),
    "influence": (None, lambda toy, psi, train, task, v, g: influence(psi, train, task, v, toy.render, g, PROBES)),
}


READING = """Reading. Pathwise is a gradient of the *relaxed* objective, so it is biased for the discrete distribution
the data really comes from: at τ = 0.1 the mean of 30 draws points the right way (cos 0.97) but single draws are
noisy (mean cos 0.72, min 0.24), and in this toy the pathwise estimator is *not* less noisy than the score function
(relative variance 0.72 and 0.45 at τ = 0.1 and 1, against 0.24) — the paper's claim does not hold here. The exact
per-bin expectation (`influence`) is almost noise-free at the same render budget. Every method closes the gap
(the target's neighbourhood, bins 0–2, reaches 0.6 within 10–19 steps for all gradient methods); pathwise τ = 0.1
then stalls on bins 0–2, where the validation loss is nearly flat (0.497–0.50 in a diagnostic run), because its
single draws are dominated by noise there. Influence concentrates on bin 1 fastest and most consistently."""


def flat(grads: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([grads[n] for n in names])


def estimator_quality(toy: ToyProblem, draws: int) -> dict:
    """At the initial ψ, θ and v fixed: single-draw cosines with the exact expected gradient, and the spread."""
    psi = toy.psi(trainable=("azimuth",), dominant_bin=DOMINANT_BIN)
    counts = {o: PER_OBJECT for o in toy.config.objects}
    base = draw_training_set(psi, counts, toy.render, torch.Generator().manual_seed(0), None)
    theta = fit(base.images, base.targets, toy.config.l2)
    v = inverse_hvp(toy.task(theta, base.images, base.targets).hvp,
                    toy.task(theta, base.images, base.targets).val_grad(), CG).v
    exact = exact_expected_gradient(psi, toy.render, theta, v, counts)
    names = list(exact)
    want = flat(exact, names)
    rows = {}
    for name, (tau, estimate) in ESTIMATORS.items():
        started = time.perf_counter()
        samples = []
        for r in range(draws):
            g = torch.Generator().manual_seed(1000 + r)
            train = draw_training_set(psi, counts, toy.render, g, tau)
            samples.append(flat(estimate(toy, psi, train, toy.task(theta, base.images, base.targets), v, g), names))
        h = torch.stack(samples)  # (draws, 16)
        cos = torch.nn.functional.cosine_similarity(h, want[None], dim=1)
        mean_cos = float(torch.nn.functional.cosine_similarity(h.mean(0), want, dim=0))
        rows[name] = {"mean_cos": float(cos.mean()), "min_cos": float(cos.min()), "cos_of_mean": mean_cos,
                      "rel_variance": float(((h - h.mean(0)) ** 2).sum(1).mean() / (want @ want)),
                      "rel_bias": float((h.mean(0) - want).norm() / want.norm()),
                      "seconds_per_draw": (time.perf_counter() - started) / draws}
    return rows


def lts_step(toy: ToyProblem, psi: Psi, counts: dict[str, int], g: torch.Generator, baseline: float | None,
             config: LTSConfig) -> tuple[dict[str, torch.Tensor], float]:
    """LTS's h and its baseline after the step: K sets drawn from ψ, θ fitted to each, the rewards −L_val."""
    rewards, log_probs = [], []
    for _ in range(config.datasets):
        train = draw_training_set(psi, counts, toy.render, g, None)
        rewards.append(float(-toy.val_loss(fit(train.images, train.targets, toy.config.l2))))
        log_probs.append(sum(psi.objects[d.obj].log_prob(d.params.bins).sum() for d in train.draws))
    return reinforce(psi.trainable(), rewards, log_probs, baseline, config.baseline_decay)


def steps_to_target(toy: ToyProblem, name: str, seed: int, max_steps: int, lr: float) -> dict:
    """Outer loop with θ re-initialised (Newton from 0) each step and normalised ψ steps; steps until the
    target bin holds ≥ 0.6 of every object's azimuth mass."""
    psi = toy.psi(trainable=("azimuth",), dominant_bin=DOMINANT_BIN)
    counts = {o: PER_OBJECT for o in toy.config.objects}
    optimizer = PsiOptimizer(psi, PsiOptimizerConfig(method="normalized", lr=lr, natural=False))
    g = torch.Generator().manual_seed(seed)
    lts, baseline = LTSConfig(datasets=4), None
    history, near = [target_mass(psi)], None
    for step in range(1, max_steps + 1):
        if name == "REINFORCE (LTS, K=4)":
            grads, baseline = lts_step(toy, psi, counts, g, baseline, lts)
        else:
            tau, estimate = ESTIMATORS[name]
            train = draw_training_set(psi, counts, toy.render, g, tau)
            theta = fit(train.images, train.targets, toy.config.l2)
            task = toy.task(theta, train.images, train.targets)
            grads = estimate(toy, psi, train, task, inverse_hvp(task.hvp, task.val_grad(), CG).v, g)
        optimizer.step(grads)
        history.append(target_mass(psi))
        near = near or (step if target_mass(psi, spread=1) >= 0.6 else None)
        if history[-1] >= 0.6:
            return {"steps": step, "near_steps": near, "history": history}
    return {"steps": None, "near_steps": near, "history": history}


def target_mass(psi: Psi, spread: int = 0) -> float:
    """The smallest over objects of the azimuth mass within `spread` bins of the target bin."""
    bins = [(TARGET_BIN + d) % 8 for d in range(-spread, spread + 1)]
    return min(float(o.factors["azimuth"].probs().detach()[bins].sum()) for o in psi.objects.values())


def markdown(quality: dict, runs: dict, args: argparse.Namespace, seconds: float) -> str:
    lines = [HEADING, "",
             f"Command: `.venv/bin/python benchmarks/bench_estimators.py --draws {args.draws} --seeds {args.seeds} "
             f"--max-steps {args.max_steps} --lr {args.lr} --write docs/RESULTS.md` — the project's 2-core "
             f"{platform.machine()} CPU machine (under load), {torch.get_num_threads()} torch thread, float64, "
             f"{seconds:.0f} s in all. Deterministic: the same command gives the same numbers.", "",
             "Toy (`neuralsim/bilevel/toy.py`): two objects whose 3×2×4 textures turn smoothly with the azimuth, "
             "an L2-regularised logistic 'detector' (θ* exact by Newton), 8 azimuth bins, ψ with bin 5 at 0.8, "
             "validation views from bin 1 (bins 0-based: bin 1 = [45°, 90°), bin 5 = [225°, 270°)). "
             f"{PER_OBJECT} images per object per draw; influence uses {PROBES} stratified probe renders per bin; "
             "v by CG (λ = 0.01, 20 iterations).", "",
             f"Single draws at the initial ψ with θ, v fixed, against the exact expected gradient "
             f"(midpoint rule, 256 points per bin), {args.draws} draws each. "
             "`rel. variance` = E‖h − E h‖² / ‖exact‖²; `rel. bias` = ‖mean h − exact‖ / ‖exact‖.", "",
             "| estimator | mean cos | min cos | cos of the mean | rel. variance | rel. bias | s per draw |",
             "|---|---|---|---|---|---|---|"]
    for name, q in quality.items():
        lines.append(f"| {name} | {q['mean_cos']:.2f} | {q['min_cos']:.2f} | {q['cos_of_mean']:.2f} | "
                     f"{q['rel_variance']:.3g} | {q['rel_bias']:.2f} | {q['seconds_per_draw']:.3f} |")
    lines += ["", f"Outer loop, θ re-initialised every step, normalised SGD on the azimuth logits (lr = {args.lr}): "
              f"outer steps until bin 1 holds ≥ 0.6 of both objects' mass (from {runs['start']:.3f}), "
              f"at most {args.max_steps}; one column per seed; in brackets the steps until bins 0–2 (the target "
              "and its neighbours, which look almost alike in this toy) hold ≥ 0.6.", "",
              "| method | " + " | ".join(f"seed {s}" for s in range(args.seeds)) + " | detector trainings per step |",
              "|---|" + "---|" * args.seeds + "---|"]
    for name, per_seed in runs["methods"].items():
        cells = [(str(r["steps"]) if r["steps"] else f"not reached ({r['history'][-1]:.2f})") + f" ({r['near_steps']})"
                 for r in per_seed]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {4 if 'LTS' in name else 1} |")
    lines += ["", READING]
    return "\n".join(lines) + "\n"


def replace_section(path: Path, heading: str, body: str) -> None:
    """Put `body` (starting with `heading`) in place of that section of `path`, or append it."""
    text = path.read_text() if path.is_file() else "# Results\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: body + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    atomic_write_text(path, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--write", type=Path, help="update this section of a results file (docs/RESULTS.md)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: more threads only add wake-up latency
    started = time.perf_counter()
    toy = toy_problem()
    quality = estimator_quality(toy, args.draws)
    methods = [*ESTIMATORS, "REINFORCE (LTS, K=4)"]
    runs = {"start": target_mass(toy.psi(dominant_bin=DOMINANT_BIN)),
            "methods": {m: [steps_to_target(toy, m, s, args.max_steps, args.lr) for s in range(args.seeds)]
                        for m in methods}}
    text = markdown(quality, runs, args, time.perf_counter() - started)
    print(text)
    if args.json:
        atomic_write_text(args.json, json.dumps({"quality": quality, "runs": runs}, indent=2))
    if args.write:
        replace_section(args.write, HEADING, text)


if __name__ == "__main__":
    main()
