"""The report of one `neuralsim optimize` run: ψ over the steps against the test set's own render
parameters (where the test set records them), losses and AP per step, the per-class table, generated
samples at the first and last step, and time and memory per step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuralsim.experiments.gaps import total_variation
from neuralsim.experiments.report import Report, image_grid, plot_curves, plot_psi_history
from neuralsim.runtime import read_json
from neuralsim.sampling.psi import Psi

VALUE_KEY = {"azimuth": "azimuth_deg", "elevation": "elevation_deg", "radius": "radius"}


def test_distribution(test_coco: str | Path, psi: Psi, obj: str, factor: str) -> np.ndarray | None:
    """The empirical distribution of the test set's render parameters of `obj` over ψ's bins of `factor`."""
    from neuralsim.data.coco import find_coco_file

    data = read_json(find_coco_file(test_coco), "COCO file")
    renders = [r for im in data["images"] for r in im.get("render", []) if r.get("object") == obj]
    if not renders:
        return None
    o = psi.objects[obj]
    if factor == "lighting":
        names = o.lighting.names
        counts = np.array([sum(r.get("lighting") == n for r in renders) for n in names], float)
    else:
        f = o.factors[factor].to_bins()
        counts = np.bincount(f.bin_of(np.array([r[VALUE_KEY[factor]] for r in renders])), minlength=f.k).astype(float)
    return counts / max(counts.sum(), 1.0)


def bin_labels(psi: Psi, obj: str, factor: str) -> list[str]:
    o = psi.objects[obj]
    if factor == "lighting":
        return list(o.lighting.names)
    f = o.factors[factor]
    edges = [f.low + i * f.width for i in range(f.k + 1)]
    return [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in range(f.k)]


def _number(value: float | None) -> str:
    """A logged loss to 4 decimals; a non-finite one is logged as null and shown as nan."""
    return "nan" if value is None else f"{value:.4f}"


def write_run_report(run_path: str | Path) -> Path:
    """`report.html` of the run in `run_path`, from its config and its typed step records."""
    from neuralsim.bilevel.config import OptimizeConfig
    from neuralsim.bilevel.record import read_records
    from neuralsim.schema import from_plain

    run_path = Path(run_path)
    cfg = from_plain(OptimizeConfig, read_json(run_path / "config.json", "Run config"), f"{run_path}/config.json")
    steps, records = zip(*read_records(run_path))
    psi = Psi.load(run_path / "psi.json")
    method = cfg.method.method
    report = Report(f"neuralsim optimize — {method}")
    factors = cfg.optimised_factors() or cfg.factors[:1]
    first, last = records[0], records[-1]
    report.paragraph(f"{len(records)} outer steps of {method} with {cfg.images_per_object} images per object per step; "
                     f"test AP {_points(first.test_ap)} → {_points(last.test_ap)}, AP50 {_points(first.test_ap50)} → "
                     f"{_points(last.test_ap50)}; validation loss {_number(first.val_loss)} → {_number(last.val_loss)}.",
                     summary=True)
    report.heading("ψ over the outer steps against the test distribution")
    rows = []
    for obj in psi.objects:
        for factor in factors:
            history = [np.array(r.psi[obj][factor]) for r in records] + [np.array(last.psi_after[obj][factor])]
            target = test_distribution(cfg.test, psi, obj, factor)
            report.figure(f"psi_{obj}_{factor}", plot_psi_history(history, target, f"{obj} {factor}",
                                                                   bin_labels(psi, obj, factor)))
            if target is not None:
                rows.append([obj, factor, total_variation(history[0], target), total_variation(history[-1], target)])
    if rows:
        report.table(["object", "factor", "TV(ψ first, test)", "TV(ψ last, test)"], rows,
                     "Total-variation distance between ψ and the test set's distribution")
    report.heading("Losses and AP per step")
    losses = {"validation loss": [r.val_loss for r in records], "test loss": [r.test_loss for r in records]}
    report.figure("curves", plot_curves(steps, losses, "loss", "validation and test loss"))
    report.figure("ap", plot_curves(steps, {"test AP": [100 * (r.test_ap or 0.0) for r in records],
                                            "test AP50": [100 * (r.test_ap50 or 0.0) for r in records]},
                                    "AP (points)", "test AP"))
    report.table(["class", "AP first", "AP last", "AP50 first", "AP50 last"],
                 [[c, *(_points(r.per_class[c][k]) for k in ("ap", "ap50") for r in (first, last))]
                  for c in last.per_class], "Per-class test AP (points) at the first and last step")
    samples = sorted((run_path / "samples").glob("step_*.png"))
    if samples:
        from PIL import Image

        report.heading("Generated training images (first and last step)")
        images = [np.asarray(Image.open(p).convert("RGB")) / 255.0 for p in samples]
        report.figure("samples", image_grid(images, [p.stem for p in samples], columns=1))
    report.heading("Time and memory per step")
    phases = sorted({k for r in records for k in r.seconds if k != "total"})
    report.figure("time", plot_curves(steps, {p: [r.seconds.get(p, 0.0) for r in records] for p in phases},
                                      "seconds", "time per phase"))
    report.table(["step", "total s", "peak memory MB", "CG residual"],
                 [[t, r.seconds["total"], r.peak_memory_mb, "–" if r.cg_residual is None else r.cg_residual]
                  for t, r in zip(steps, records)])
    return report.save(run_path)


def _points(value: float | None) -> str:
    """An AP in [0, 1] as points with one decimal; – where the test set has no object of it."""
    return "–" if value is None else f"{100 * value:.1f}"
