"""Is the render continuous in the pose? The change of Σ alpha over a small range of each pose parameter (the
secant) against the integral of its autograd derivative (trapezoid rule): they agree when the render has no jumps
that the pathwise derivative cannot see (docs/RESULTS.md, *Density on the faces of the box*).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_render_continuity.py \
        --field can=~/.cache/neuralsim/fields/002_master_chef_can-… --out benchmarks/results/render-pose-continuity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from neuralsim.fields.checkpoint import load_field
from neuralsim.render import render

POSE = {"azimuth": 30.0, "elevation": 40.0, "radius": 4.0}
RANGES = {"azimuth": (29.5, 30.5), "elevation": (39.5, 40.5), "radius": (3.95, 4.05)}


def secant_and_integral(field, name: str, points: int, size: int) -> dict[str, float]:
    xs = np.linspace(*RANGES[name], points)
    values, slopes = [], []
    for x in xs:
        pose = dict(POSE)
        pose[name] = value = torch.tensor(x, requires_grad=True)
        total = render(field, pose["azimuth"], pose["elevation"], pose["radius"], 0, size, 40.0).alpha.sum()
        values.append(total.item())
        slopes.append(torch.autograd.grad(total, value)[0].item())
    secant, integral = values[-1] - values[0], float(np.trapezoid(slopes, xs))
    return {"secant": secant, "integral": integral, "ratio": integral / secant}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--field", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--points", type=int, default=21)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {}
    for item in args.field:
        name, folder = item.split("=", 1)
        field = load_field(Path(folder).expanduser())
        field.requires_grad_(False)
        for factor in RANGES:
            result[f"{name}/{factor}"] = r = secant_and_integral(field, factor, args.points, args.size)
            print(f"{name} {factor}: secant {r['secant']:.3f}, integral {r['integral']:.3f}, ratio {r['ratio']:.3f}")
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
