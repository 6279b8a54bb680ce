"""The comparison report of a benchmark grid: AP of the biased objects per method and initialisation
(mean and spread over seeds, paper Fig. 4), ψ against the test distribution (Fig. 6, with total-variation
distances), the per-class table (Table 1) and the compute each method spent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from neuralsim.bilevel.estimators import METHODS
from neuralsim.experiments.gaps import bench_gap, total_variation
from neuralsim.experiments.report import Report, plot_method_bars, plot_psi_history
from neuralsim.runtime import atomic_write_json, atomic_write_text, read_json


def load_runs(out: Path) -> dict[tuple[str, str, int], list[dict]]:
    """(init, method, seed) → the metrics of each step of that run of the bench in `out` (runs with none left out)."""
    runs = {}
    for path in sorted((out / "runs").glob("*-s*")):
        init, method, seed = path.name.rsplit("-", 2)[0], path.name.rsplit("-", 2)[1], int(path.name.rsplit("-s", 1)[1])
        metrics = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()] \
            if (path / "metrics.jsonl").is_file() else []
        if metrics:
            runs[(init, method, seed)] = metrics
    return runs


TAIL = 3
"""Outer steps averaged for a run's AP: one step's AP on a few dozen test images moves by several points."""


def _tail(metrics: list[dict], value) -> float:
    """Mean of `value` over the last `TAIL` steps; NaN when any of them logged none (a diverged loss is logged as
    null, and must not read as a loss of 0)."""
    values = [value(m) for m in metrics[-TAIL:]]
    return float("nan") if any(v is None for v in values) else float(np.mean(values))


def _steps(rows: list[dict]) -> str:
    """The outer steps the runs of a group ran: "16", or "12–16" when they differ (an unfinished run among them)."""
    low, high = min(r["steps"] for r in rows), max(r["steps"] for r in rows)
    return str(low) if low == high else f"{low}–{high}"


def summarise(out: str | Path) -> dict:
    """Plain numbers of the grid: AP per biased object (mean over the last `TAIL` steps), TV to the test
    distribution, validation loss, compute."""
    from neuralsim.experiments.gaps import target_probs

    out = Path(out)
    bench = read_json(out / "bench.json", "Benchmark record")["bench"]
    bins = {k: bench.get(k) for k in ("target_bin", "different_bin", "lighting")}
    gap = bench_gap(bench["gap"], bench["objects"], bench["biased"], **bins)
    factor = gap.factor
    rows = []
    for (init, method, seed), metrics in load_runs(out).items():
        last = metrics[-1]
        row = {"init": init, "method": method, "seed": seed, "steps": len(metrics),
               "test_ap": _tail(metrics, lambda m: m["test_ap"]), "test_ap50": _tail(metrics, lambda m: m["test_ap50"]),
               "val_loss_first": metrics[0]["val_loss"], "val_loss": _tail(metrics, lambda m: m["val_loss"]),
               # the test loss is logged since 2026-12-01; older runs have none
               "test_loss_first": metrics[0].get("test_loss"),
               "test_loss": _tail(metrics, lambda m: m["test_loss"]) if "test_loss" in last else None,
               "trainings": sum(m["detector_trainings"] for m in metrics),
               "images": sum(m["images_rendered"] for m in metrics),
               "seconds": sum(m["seconds"]["total"] for m in metrics)}
        for obj in bench["biased"]:
            row[f"ap_first/{obj}"] = metrics[0]["per_class"][obj]["ap"]
            row[f"ap/{obj}"] = _tail(metrics, lambda m: m["per_class"][obj]["ap"])
            row[f"ap50/{obj}"] = _tail(metrics, lambda m: m["per_class"][obj]["ap50"])
            target = target_probs(gap, obj)
            row[f"tv_first/{obj}"] = total_variation(metrics[0]["psi"][obj][factor], target)
            row[f"tv_last/{obj}"] = total_variation(last["psi_after"][obj][factor], target)
        rows.append(row)
    summary = {"gap": bench["gap"], "objects": bench["objects"], "biased": bench["biased"], **bins, "rows": rows,
               "retrain": load_retrainings(out, bench["biased"])}
    atomic_write_json(out / "summary.json", summary)
    return summary


def load_retrainings(out: Path, biased: list[str]) -> list[dict]:
    """The detectors trained from scratch after the runs (`retrain/<init>-<method>-s<seed>.json`, method "psi0" for
    the control, ψ₀ on the same random numbers): AP, AP50 and each biased object's AP."""
    rows = []
    for path in sorted((out / "retrain").glob("*-s*.json")):
        init, method, seed = path.stem.rsplit("-", 2)[0], path.stem.rsplit("-", 2)[1], int(path.stem.rsplit("-s", 1)[1])
        result = read_json(path, "Retraining result")
        rows.append({"init": init, "method": method, "seed": seed, "ap": result["ap"], "ap50": result["ap50"],
                     "per_object": result["spec"]["per_object"], "epochs": result["spec"]["epochs"],
                     **{f"ap/{obj}": result["per_class"][obj]["ap"] for obj in biased}})
    return rows


POOL_ABOVE = 4
"""With more biased objects than this (ycb21), the table shows their mean instead of a column pair each."""


def markdown_table(summary: dict) -> str:
    """Per (init, method): the outer steps run, each biased object's AP after the first step and over the last
    steps, the TV distance of its ψ to the test distribution, all-class AP and the validation loss (mean ± std over
    seeds; the population std, ddof 0)."""

    def cell(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
        v = np.array(values, dtype=float) * scale
        return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"

    rows, biased = summary["rows"], summary["biased"]
    pooled = len(biased) > POOL_ABOVE  # many biased objects: one column of their mean
    head = ["ψ init", "method", "seeds", "steps"]
    for obj in ["biased objects (mean)"] if pooled else biased:
        head += [f"{obj} AP first → last {TAIL}", f"{obj} TV first → last"]
    head += [f"AP all, last {TAIL}", f"val loss first → last {TAIL}", f"test loss first → last {TAIL}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    groups = sorted({(r["init"], r["method"]) for r in rows},
                    key=lambda g: (["same", "uniform", "different"].index(g[0]),
                                   list(METHODS).index(g[1])))
    for init, method in groups:
        rs = [r for r in rows if r["init"] == init and r["method"] == method]
        low, high = min(r["steps"] for r in rs), max(r["steps"] for r in rs)  # a run cut short shows here
        cells = [init, method, str(len(rs)), str(low) if low == high else f"{low}–{high}"]
        if pooled:
            rs = [r | {f"{key}/pooled": float(np.mean([r[f"{key}/{obj}"] or 0.0 for obj in biased]))
                       for key in ("ap_first", "ap", "tv_first", "tv_last")} for r in rs]
        for obj in ["pooled"] if pooled else biased:
            cells.append(f"{cell([r[f'ap_first/{obj}'] or 0 for r in rs], 100)} → {cell([r[f'ap/{obj}'] for r in rs], 100)}")
            cells.append(f"{cell([r[f'tv_first/{obj}'] for r in rs], digits=2)} → {cell([r[f'tv_last/{obj}'] for r in rs], digits=2)}")
        cells.append(f"{cell([r['test_ap'] for r in rs], 100)}")
        for key in ("val_loss", "test_loss"):
            first, last = [r.get(f"{key}_first") for r in rs], [r.get(key) for r in rs]
            cells.append("—" if None in first + last else f"{cell(first, digits=3)} → {cell(last, digits=3)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def retrain_table(summary: dict) -> tuple[list[str], list[list]]:
    """Per (init, data): the retrained detectors' AP (mean over seeds, points), and the gain over the control — ψ₀
    on the same random numbers under the same seed — as its mean and the number of seeds where it is positive. NS's
    data is the control's (ψ₀ never moves), shown as "ns = ψ₀"."""
    rows, biased = summary.get("retrain", []), summary["biased"]
    pooled = len(biased) > POOL_ABOVE
    keys = ["ap", "ap50"] + (["biased"] if pooled else [f"ap/{o}" for o in biased])
    rows = [r | {"biased": float(np.mean([r[f"ap/{o}"] for o in biased]))} for r in rows]
    labels = ["AP all", "AP50 all"] + (["biased objects (mean)"] if pooled else biased)
    head = ["ψ init", "data", "seeds", *labels, *(f"gain: {label}" for label in labels)]
    table = []
    for init in sorted({r["init"] for r in rows}, key=["same", "uniform", "different"].index):
        control = {r["seed"]: r for r in rows if r["init"] == init and r["method"] == "psi0"}
        for method in [m for m in ("psi0", *list(METHODS)[1:]) if any(
                r["init"] == init and r["method"] == m for r in rows)]:
            rs = [r for r in rows if r["init"] == init and r["method"] == method]
            cells = [init, "ns = ψ₀" if method == "psi0" else method, len(rs)]
            cells += [f"{100 * np.mean([r[k] for r in rs]):.1f}" for k in keys]
            for k in keys:
                gains = [100 * (r[k] - control[r["seed"]][k]) for r in rs if r["seed"] in control]
                cells.append("—" if method == "psi0" or not gains else
                             f"{np.mean(gains):+.1f} ({sum(g > 0 for g in gains)} of {len(gains)})")
            table.append(cells)
    return head, table


def write_bench_report(out: str | Path) -> Path:
    from neuralsim.experiments.gaps import target_probs
    from neuralsim.experiments.run_report import bin_labels
    from neuralsim.sampling.psi import Psi

    out = Path(out)
    summary = summarise(out)
    rows, biased = summary["rows"], summary["biased"]
    gap = bench_gap(summary["gap"], summary["objects"], biased, summary.get("target_bin"), summary.get("different_bin"),
                    summary.get("lighting"))
    report = Report(f"neuralsim bench — {gap.name} gap")
    head, retrained = retrain_table(summary)
    if rows:
        text = markdown_table(summary)
        if retrained:
            text += ("\nRetrained from scratch on each run's final ψ (AP points; gain: mean over seeds against ψ₀ drawn "
                     "with the same random numbers under the same seed, and the seeds where it is positive):\n\n"
                     + "| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n"
                     + "".join("| " + " | ".join(map(str, r)) + " |\n" for r in retrained))
        atomic_write_text(out / "summary.md", text)
    if not rows:
        report.paragraph("No run has finished a step yet.")
        return report.save(out)
    inits = sorted({r["init"] for r in rows}, key=["same", "uniform", "different"].index)
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    report.heading(f"Test AP of the biased objects (mean ± std over seeds; each run: mean of its last {TAIL} outer steps)")
    table = []
    for obj in biased:
        cells = [[[100 * (r[f"ap/{obj}"] or 0.0) for r in rows if r["init"] == init and r["method"] == method]
                  for method in methods] for init in inits]
        for init, row in zip(inits, cells):
            for method, values in zip(methods, row):
                if values:
                    group = [r for r in rows if r["init"] == init and r["method"] == method]
                    table.append([obj, init, method, len(values), _steps(group), float(np.mean(values)) / 100,
                                  float(np.std(values)) / 100, float(np.mean([r[f"tv_last/{obj}"] for r in group]))])
        report.figure(f"ap_{obj}", plot_method_bars(inits, methods, cells, "AP (points)",
                                                    f"{obj}: test AP by initialisation and method"))
    report.table(["object", "ψ init", "method", "seeds", "steps", "AP mean", "AP std", "TV(ψ last, test)"], table)
    if retrained:
        r0 = summary["retrain"][0]
        report.heading(f"A detector trained from scratch on each run's final ψ ({r0['per_object']} renders per object, "
                       f"{r0['epochs']} epochs), against ψ₀ on the same random numbers (AP points)")
        report.table(head, retrained)
        rs = summary["retrain"]
        r_inits = sorted({r["init"] for r in rs}, key=["same", "uniform", "different"].index)
        r_methods = [m for m in ("psi0", *list(METHODS)[1:]) if any(r["method"] == m for r in rs)]
        for name, value in (("all", lambda r: r["ap"]), ("biased", lambda r: np.mean([r[f"ap/{o}"] for o in biased]))):
            cells = [[[100 * value(r) for r in rs if r["init"] == i and r["method"] == m] for m in r_methods] for i in r_inits]
            report.figure(f"retrain_ap_{name}", plot_method_bars(
                r_inits, ["ns = ψ₀" if m == "psi0" else m for m in r_methods], cells, "AP (points)",
                f"trained from scratch on each method's final ψ: AP of {'all classes' if name == 'all' else 'the biased objects'}"))
    report.heading("Compute per run (equal detector training for all but LTS; images rendered include the estimator's "
                   "own renders: influence's probes, nso's pass 2)")
    report.table(["method", "steps", "detector trainings", "images rendered", "seconds"],
                 [[m, _steps([r for r in rows if r["method"] == m]),
                   *np.mean([[r["trainings"], r["images"], r["seconds"]] for r in rows if r["method"] == m], 0).tolist()]
                  for m in methods])
    runs = load_runs(out)
    shown = {}  # (init, method) → its lowest seed
    for init, method, seed in runs:
        shown[(init, method)] = min(seed, shown.get((init, method), seed))
    report.heading("ψ over the steps against the test distribution (each method's lowest seed: "
                   + ", ".join(f"{m} {i} s{s}" for (i, m), s in sorted(shown.items()) if m != "ns") + ")")
    for (init, method, seed), metrics in sorted(runs.items()):
        if seed != shown[(init, method)] or method == "ns":
            continue
        psi = Psi.load(out / "psi0" / f"{init}.json")
        for obj in biased:
            history = [np.array(m["psi"][obj][gap.factor]) for m in metrics] + [np.array(metrics[-1]["psi_after"][obj][gap.factor])]
            report.figure(f"psi_{init}_{method}_{obj}", plot_psi_history(history, target_probs(gap, obj),
                                                                         f"{obj} ({init}, {method})",
                                                                         bin_labels(psi, obj, gap.factor)))
    report.heading(f"Per-class test AP, last {TAIL} steps (mean over steps, seeds and initialisations)")
    classes = list(next(iter(runs.values()))[-1]["per_class"])
    per_class = [[c, *[float(np.mean([_tail(ms, lambda x: x["per_class"][c]["ap"]) for (i, m, s), ms in runs.items() if m == meth]))
                       for meth in methods]] for c in classes]
    per_class.append(["mAP", *[float(np.mean([row[k + 1] for row in per_class])) for k in range(len(methods))]])
    report.table(["class", *methods], per_class)
    return report.save(out)
