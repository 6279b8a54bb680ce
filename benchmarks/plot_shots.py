"""The combined experiment as one figure: test AP of each biased object against the number of labelled target-domain
images ("shots") mixed into training, with and without ψ optimisation, mean ± std over seeds. A dashed line marks NS
from ψ₀ = "same" (a detector trained on the target distribution) where the folder without shots holds those runs.

Each `--bench SHOTS=FOLDER` is a `neuralsim bench` folder of one config that differs from the others only in
`shots_per_object`; the figure takes each run's AP over its last 3 steps from the folder's `summary.json`.

    python benchmarks/plot_shots.py --bench 0=B0 --bench 10=B10 --bench 25=B25 --out docs/figures/zoom_shots.png
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

LABELS = {"ns": "NS (ψ₀ kept)", "nso": "NSO", "influence": "influence", "autosim": "Auto-Sim", "lts": "LTS"}


def load(benches: dict[int, Path], init: str, methods: list[str], fail) -> tuple[list[str], dict, dict]:
    """Biased objects; (method, object) → shots → the seeds' AP (percent); object → the seeds' AP of NS from
    ψ₀ = same without shots (the detector trained on the target distribution), where a folder has it.
    `fail(message)` on bad input."""
    ap: dict = defaultdict(lambda: defaultdict(list))
    reference: dict = defaultdict(list)
    biased = None
    for shots, folder in sorted(benches.items()):
        if not (folder / "summary.json").is_file():
            fail(f"{folder} has no summary.json: is it a finished `neuralsim bench` folder?")
        summary = json.loads((folder / "summary.json").read_text())
        if biased is not None and summary["biased"] != biased:
            fail(f"{folder} tests other objects ({summary['biased']}) than the first folder ({biased}).")
        biased = summary["biased"]
        for row in summary["rows"]:
            for obj in biased:
                if row["init"] == init and row["method"] in methods:
                    ap[row["method"], obj][shots].append(100 * row[f"ap/{obj}"])
                if shots == 0 and row["init"] == "same" and row["method"] == "ns":
                    reference[obj].append(100 * row[f"ap/{obj}"])
    if not ap:
        fail(f"No run of {', '.join(methods)} from ψ₀ = {init} in {', '.join(map(str, benches.values()))}.")
    return biased, ap, reference


def plot(biased: list[str], ap: dict, reference: dict, out: Path) -> None:
    methods = sorted({m for m, _ in ap}, key=list(LABELS).index)
    fig, axes = plt.subplots(1, len(biased), figsize=(4.2 * len(biased), 3.4), sharey=True, squeeze=False)
    for ax, obj in zip(axes[0], biased):
        for method in methods:
            series = ap[method, obj]
            shots = sorted(series)
            mean = [np.mean(series[s]) for s in shots]
            std = [np.std(series[s]) for s in shots]
            ax.errorbar(shots, mean, yerr=std, marker="o", capsize=3, label=f"{LABELS[method]}")
        if reference.get(obj):
            ax.axhline(np.mean(reference[obj]), color="grey", linestyle="--", label="NS from ψ₀ = same, no shots")
        ax.set_title(obj)
        ax.set_xlabel("labelled target images per object")
        ax.set_xticks(sorted({s for m in methods for s in ap[m, obj]}))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test AP, last 3 steps")
    axes[0][-1].legend(loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", action="append", required=True, metavar="SHOTS=FOLDER",
                        help="a bench folder and the shots per object its config mixes in (repeat)")
    parser.add_argument("--init", default="different", help="the ψ initialisation to plot")
    parser.add_argument("--methods", default="ns,influence", help="comma-separated methods to plot")
    parser.add_argument("--out", type=Path, required=True, help="PNG file")
    args = parser.parse_args()
    benches = {}
    for item in args.bench:
        shots, sep, folder = item.partition("=")
        if not sep or not shots.isdigit():
            parser.error(f"--bench takes SHOTS=FOLDER, got {item!r}.")
        benches[int(shots)] = Path(folder)
    plot(*load(benches, args.init, args.methods.split(","), parser.error), args.out)
    print(args.out)


if __name__ == "__main__":
    main()
