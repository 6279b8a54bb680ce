"""Pose gradients of a fitted field's labelled renders against central differences (issue 6, pass 2).

The pathwise hypergradient pulls e_j back through `FieldSource.vjp`; this checks that pull-back on a real
fitted field (not a smooth test blob): d⟨x(θ), e⟩/dθ for θ = radius and azimuth, with e all ones (the
image's brightness) and e a blurred noise image (smooth, of both signs), for a few draws from a ψ.

    .venv/bin/python benchmarks/bench_render_fd.py FIELD_DIR [--images 4] [--out result.json]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from neuralsim.bilevel.field_source import FieldSource, SourceConfig, load_fields
from neuralsim.runtime import atomic_write_json
from neuralsim.sampling.init import PsiInit, init_psi

STEPS = {"radius": (0.2, 0.05, 0.01), "azimuth_deg": (4.0, 1.0, 0.25)}


def upstreams(shape: torch.Size) -> dict[str, torch.Tensor]:
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    kernel = torch.ones(3, 1, 9, 9) / 81
    return {"ones": torch.ones(shape), "blurred noise": F.conv2d(noise, kernel, padding=4, groups=3) * 9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("field", type=Path)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    name = "object"
    source = FieldSource(load_fields({name: args.field}), [name], ["studio"], SourceConfig(size=args.size, seed=0))
    psi = init_psi(PsiInit(objects=[name], bins={"azimuth": 8, "elevation": 1, "radius": 1}, lighting=["studio"]))
    obj = psi.objects[name]
    params = obj.discrete(obj.draw_noise(args.images, torch.Generator().manual_seed(1))).detach()
    images, _ = source(name, params)
    rows = []
    for e_name, e in upstreams(images.shape).items():
        pulled = source.vjp(name, params, e)
        for key, steps in STEPS.items():
            for h in steps:
                sums = {}
                for sign in (1, -1):
                    moved = params.with_tensors(t + sign * h if k == key else t
                                                for k, t in zip(params.CONTINUOUS, params.tensors()))
                    sums[sign] = (source(name, moved)[0] * e).flatten(1).sum(1)
                numeric = (sums[1] - sums[-1]) / (2 * h)
                analytic = getattr(pulled, key).float()
                rel = float((analytic - numeric).norm() / numeric.norm())
                rows.append({"upstream": e_name, "parameter": key, "step": h, "analytic": analytic.tolist(),
                             "numeric": numeric.tolist(), "relative_error": rel})
                print(f"{e_name:14s} {key:12s} h={h:<5} vjp {[round(v, 2) for v in analytic.tolist()]} "
                      f"fd {[round(v, 2) for v in numeric.tolist()]} rel.err {rel:.2f}", flush=True)
    if args.out:
        atomic_write_json(args.out, {"field": str(args.field), "machine": platform.machine(), "rows": rows})


if __name__ == "__main__":
    main()
