"""Ground-truth renderer timing: `neuralsim capture` of one object at 64 and 128 px, per-image time.

Usage: .venv/bin/python benchmarks/bench_capture.py [--object 019_pitcher_base] [--views 100]
Prints a markdown table for docs/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from neuralsim.assets.capture import CaptureConfig, capture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--object", default="019_pitcher_base")
    parser.add_argument("--views", type=int, default=100)
    parser.add_argument("--sizes", default="64,128")
    parser.add_argument("--spp", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| object | size | views | spp | total s | ms / image |")
    print("|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = CaptureConfig(views=args.views, size=size, spp=args.spp, lighting=["studio", "warm_left", "cool_right", "dim_top"])
            start = time.perf_counter()
            capture(args.object, os.path.join(tmp, "cap"), cfg)
            total = time.perf_counter() - start
        print(f"| {args.object} | {size} | {args.views} | {args.spp} | {total:.1f} | {1000 * total / args.views:.0f} |")


if __name__ == "__main__":
    main()
