"""The hypergradient at the first outer step of a gap, on the real detector (issue 6, estimator quality).

Prepares the pose-gap assets (cached), trains the detector one outer step on data drawn from ψ₀ exactly as the
loop does, then holds θ and v fixed and draws each estimator many times on fresh training sets. Reports, per
estimator and per choice of v: the cosine of single draws with the reference (the mean of all `influence` and
`influence paired` draws with the same v), its spread, and where the descent direction sends the biased objects' mass of the gap's factor.

    .venv/bin/python benchmarks/bench_step0.py --gap pose --draws 8 [--demo | --config BENCH.json] [--out step0.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from neuralsim.bilevel.data import draw_training_set
from neuralsim.bilevel.detector_task import DetectorTask
from neuralsim.bilevel.estimators import StepInputs
from neuralsim.bilevel.estimators.autosim import score_function
from neuralsim.bilevel.estimators.influence import FIELD_OF, influence, probe_bin_means
from neuralsim.bilevel.estimators.lts import LTSConfig
from neuralsim.bilevel.estimators.nso import pathwise
from neuralsim.bilevel.inverse_hvp import InverseHVPConfig, inverse_hvp
from neuralsim.bilevel.loop import BilevelRun
from neuralsim.clock import PhaseClock
from neuralsim.experiments.bench import run_config
from neuralsim.experiments.cli import script_bench
from neuralsim.experiments.prepare import initial_psi, prepare
from neuralsim.experiments.recipes import recipe
from neuralsim.runtime import atomic_write_json, derive_seed

ESTIMATORS = {  # name → τ of the training draws (None: discrete); "boxes held": the pathwise term without labels
    "nso τ=0.1": 0.1,
    "nso τ=1": 1.0,
    "nso τ=0.1 boxes held": 0.1,
    "nso τ=1 boxes held": 1.0,
    "autosim": None,
    "lts": None,  # REINFORCE on the validation loss of K detectors trained from θ (no v)
    "influence": None,
    "influence paired": None,  # probe j of every bin shares its other factors, background and shift
}


def counts(run: BilevelRun) -> dict[str, int]:
    return {o: run.cfg.images_per_object for o in run.names}


def estimate(name: str, run: BilevelRun, task: DetectorTask, v: torch.Tensor, generator: torch.Generator,
             probes: int, lts: LTSConfig) -> dict[str, torch.Tensor]:
    if name == "lts":
        # K copies of the detector trained as at outer step 1; each draw is a first step (no state): its baseline
        # is the mean of its own K rewards
        return lts.step(StepInputs(
            psi=run.psi, counts=counts(run), render=run.source, render_vjp=run.source.vjp, model=run.model,
            train=run._train_fn(1), task=run._task_fn(generator), val_loss=run.val_loss,
            shots=0 if run.shots is None else len(run.shots), second_order=run.cfg.hypergradient,
            generator=generator, clock=PhaseClock(run.device), state={})).grads
    train = draw_training_set(run.psi, counts(run), run.source, generator, ESTIMATORS[name])
    if name.startswith("nso"):
        return pathwise(run.psi, train, task, v, run.source.vjp, replay_batch=4, factors=(run.cfg.factors[0],),
                        labels="boxes held" not in name)
    if name == "autosim":
        return score_function(run.psi, train, task, v)
    return influence(run.psi, train, task, v, run.source, generator, probes, paired_probes="paired" in name)


def label_check(run: BilevelRun, task: DetectorTask, v: torch.Tensor, obj: str, factor: str, n: int,
                delta: float) -> dict:
    """Per image j drawn from ψ₀: the pathwise derivative of s_j = ∇θl(x_j, y_j)·v along the factor (the
    render's VJP of the mixed term, with the labels y_j held fixed or moving with the render through their
    sub-pixel edges) against central differences of s_j with the labels held fixed and with the labels
    re-derived from the moved render."""
    key = FIELD_OF[factor]
    noise = run.psi.objects[obj].draw_noise(n, torch.Generator().manual_seed(derive_seed(3, "labels", obj)))
    params = run.psi.objects[obj].discrete(noise).detach()
    images, targets = run.source(obj, params)
    e, e_boxes = task.mixed_with_boxes(images, targets, v)
    pathwise_d = getattr(run.source.vjp(obj, params, e), key).double()
    labelled_d = getattr(run.source.vjp(obj, params, e, e_boxes), key).double()
    moved = {}
    for sign in (1, -1):
        values = getattr(params, key) + sign * delta
        moved[sign] = run.source(obj, params.with_tensors(
            values if name == key else t for name, t in zip(params.CONTINUOUS, params.tensors())))
    fixed_d = (task.grad_dot(moved[1][0], targets, v) - task.grad_dot(moved[-1][0], targets, v)).double() / (2 * delta)
    moving_d = (task.grad_dot(*moved[1], v) - task.grad_dot(*moved[-1], v)).double() / (2 * delta)

    def agree(a: torch.Tensor, b: torch.Tensor) -> dict:
        return {"sign_agreement": float((torch.sign(a) == torch.sign(b)).double().mean()), "cos": cos(a, b)}

    return {"pathwise_vs_fd_fixed_labels": agree(pathwise_d, fixed_d),
            "fd_fixed_vs_fd_moving_labels": agree(fixed_d, moving_d),
            "pathwise_vs_fd_moving_labels": agree(pathwise_d, moving_d),
            "pathwise_labels_vs_fd_moving_labels": agree(labelled_d, moving_d),
            "mean": {"pathwise": float(pathwise_d.mean()), "pathwise_labels": float(labelled_d.mean()),
                     "fd_fixed": float(fixed_d.mean()), "fd_moving": float(moving_d.mean())}}


def flat(grads: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([grads[n].flatten() for n in names]).double()


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap", default="pose", help="pose or zoom (a gap of binned factors)")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--probes", type=int, default=4, help="influence: probe renders per bin")
    parser.add_argument("--reference-probes", type=int, default=16, help="probes per bin of the m_i table")
    parser.add_argument("--damping", type=float, default=1.0)
    parser.add_argument("--cg-iterations", type=int, default=10)
    parser.add_argument("--theta", default="heads")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--identity-draws", action="store_true",
                        help="draw the estimators with v = ∇θL_val too (the bin means m_i are always shown for both)")
    parser.add_argument("--label-images", type=int, default=16, help="images per biased object in the label check")
    parser.add_argument("--label-delta", type=float, default=None, help="finite-difference step (default: 4° or 0.2)")
    parser.add_argument("--demo", action="store_true", help="the demo's four objects and sizes (else the full bench)")
    parser.add_argument("--config", default=None,
                        help="a bench config JSON: its gap, objects, biased objects, sizes, detector and ψ recipe")
    parser.add_argument("--box-loss", default=None, help="the detector's box loss (l1, smooth_l1, giou)")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    start = time.perf_counter()

    bench = script_bench(args.config, args.gap, args.demo, args.cache)
    bench.inits = ["different"]
    factor = bench.gap_spec.factor
    if factor == "lighting":
        raise SystemExit("bench_step0 compares estimators of binned factors: use --gap pose or zoom")
    # with --demo, the demo's objects and sizes but the recipes' detector, as the results were measured
    detector = recipe(bench.gap).optimize.detector if args.demo and not args.config else bench.optimize.detector
    bench.optimize.detector = dataclasses.replace(detector, box_loss=args.box_loss or detector.box_loss)
    prepared = prepare(bench)
    with tempfile.TemporaryDirectory() as tmp:
        psi_path = initial_psi(bench.gap_spec, "different").save(Path(tmp) / "psi0.json")
        # the estimators are called below one by one; the run's method only makes ψ's factor trainable
        cfg = run_config(bench.with_methods(["influence"]), prepared, "different", "influence", 0, psi_path)
        lts = bench.with_methods(["lts"]).methods[0]  # the bench's LTS settings, else LTS's defaults
        cfg.hypergradient = dataclasses.replace(cfg.hypergradient, theta=args.theta)
        run = BilevelRun(cfg, Path(tmp) / "run")
        generator = torch.Generator().manual_seed(derive_seed(0, "step", 0))
        train = draw_training_set(run.psi, counts(run), run.source, generator, None)
        run._train_fn(0)(run.model, train)
        sub = torch.randperm(len(train), generator=generator)[: cfg.hypergradient.hvp_images]
        task = DetectorTask(run.model, cfg.theta, train.images[sub], [train.targets[i] for i in sub], run.val,
                            cfg.batch_size)
        g_val = task.val_grad()
        solves = {"cg": inverse_hvp(task.hvp, g_val, InverseHVPConfig(damping=args.damping,
                                                                        iterations=args.cg_iterations)),
                  "identity": inverse_hvp(task.hvp, g_val, InverseHVPConfig(method="identity"))}
        biased, target = list(bench.biased), bench.gap_spec.target_bin
        names = [f"{o}/{factor}" for o in bench.objects]
        result = {"gap": bench.gap, "config": args.config, "box_loss": bench.optimize.detector.box_loss, "draws": args.draws, "probes": args.probes, "machine": platform.machine(), "theta_size": task.size, "damping": args.damping,
                  "cg_residual": solves["cg"].residual, "cg_iterations": solves["cg"].iterations,
                  "cos_v_cg_identity": cos(solves["cg"].v.double(), g_val.double()), "v": {}}
        for v_name, solve in solves.items():
            v = solve.v
            m = {o: probe_bin_means(run.psi.objects[o], factor, o, run.source, task, v, args.reference_probes,
                                    torch.Generator().manual_seed(derive_seed(1, "probes", o))).tolist()
                 for o in biased}
            draws, seconds = {}, {}
            for name in args.estimators.split(",") if v_name == "cg" or args.identity_draws else []:
                tick = time.perf_counter()
                draws[name] = [flat(estimate(name, run, task, v, torch.Generator().manual_seed(derive_seed(2, name, d)),
                                             args.probes, lts), names) for d in range(args.draws)]
                seconds[name] = (time.perf_counter() - tick) / args.draws
                print(f"{v_name} {name}: {seconds[name]:.1f} s per draw", flush=True)
            # both influence variants are unbiased for the same gradient: their pooled mean is the reference
            pooled = [h for name, hs in draws.items() if name.startswith("influence") for h in hs]
            reference = torch.stack(pooled).mean(0) if pooled else None
            rows = {}
            for name, hs in draws.items():
                mean = torch.stack(hs).mean(0)
                step = -mean.reshape(len(bench.objects), -1)  # descent direction on the logits
                row = {"seconds_per_draw": seconds[name],
                       "target_bin_rank": {o: int((step[bench.objects.index(o)] > step[bench.objects.index(o), target])
                                                  .sum()) for o in biased},
                       "descent_on_logits": {o: step[bench.objects.index(o)].tolist() for o in biased}}
                if reference is not None:
                    cs = [cos(h, reference) for h in hs]
                    row |= {"mean_cos": sum(cs) / len(cs), "min_cos": min(cs), "cos_of_mean": cos(mean, reference),
                            "rel_variance": float(torch.stack([(h - mean).pow(2).sum() for h in hs]).mean()
                                                  / reference.pow(2).sum())}
                rows[name] = row
            result["v"][v_name] = {"bin_means": m, "estimators": rows}
            if v_name == "cg" and args.label_images:
                delta = args.label_delta or (4.0 if factor == "azimuth" else 0.2)
                result["label_check"] = {o: label_check(run, task, v, o, factor, args.label_images, delta)
                                         for o in biased}
                print("label check:", json.dumps(result["label_check"]), flush=True)
    result["seconds"] = time.perf_counter() - start
    if args.out:
        atomic_write_json(args.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
