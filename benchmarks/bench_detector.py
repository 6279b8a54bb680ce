"""Detector throughput on this machine: train and eval images/s per backbone and image size, and the time
of one Hessian-vector product and of the mixed term ∂/∂x[∇θ l·v] (θ = heads) per image.

    .venv/bin/python benchmarks/bench_detector.py --out benchmarks/results/detector.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from neuralsim.runtime import atomic_write_json, resolve_device
from neuralsim.tasks.detector import BACKBONES, build_detector
from neuralsim.tasks.second_order import hvp, mixed_term, select_params

NUM_CLASSES = 6


def _batch(n: int, size: int, device: torch.device, seed: int = 0):
    """n random images (n, 3, size, size) with one box each, covering a third to two thirds of the image."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    lo = torch.rand(n, 2, generator=g) * size / 3
    boxes = torch.cat([lo, lo + size / 3 + torch.rand(n, 2, generator=g) * size / 3], dim=1)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    targets = [{"boxes": boxes[j : j + 1].to(device), "labels": labels[j : j + 1].to(device)} for j in range(n)]
    return images.to(device), targets


def _seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of `fn` over `repeats` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def throughput(backbone: str, size: int, batch: int, repeats: int, device: torch.device) -> dict:
    model = build_detector(backbone, NUM_CLASSES, image_size=size).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images, targets = _batch(batch, size, device)

    def train_step() -> None:
        loss = model(images, targets, detect=False).loss_per_image().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_step() -> None:
        with torch.no_grad():
            model(images, detect=True)

    train_s, eval_s = _seconds(train_step, repeats, device), _seconds(eval_step, repeats, device)
    return {"backbone": backbone, "size": size, "batch": batch, "train_images_per_s": batch / train_s,
            "train_ms_per_image": 1000 * train_s / batch, "eval_images_per_s": batch / eval_s}


def second_order(backbone: str, size: int, batch: int, group: str, repeats: int, device: torch.device) -> dict:
    model = build_detector(backbone, NUM_CLASSES, image_size=size).to(device)
    params = select_params(model, group)
    g = torch.Generator().manual_seed(1)
    v = {k: torch.randn(p.shape, generator=g).to(device) for k, p in params.items()}
    images, targets = _batch(batch, size, device)
    hvp_s = _seconds(lambda: hvp(model, params, images, targets, v), repeats, device)
    mixed_s = _seconds(lambda: mixed_term(model, params, images, targets, v), repeats, device)
    return {"backbone": backbone, "size": size, "batch": batch, "theta": group,
            "theta_params": sum(p.numel() for p in params.values()), "hvp_s": hvp_s, "mixed_s": mixed_s,
            "hvp_s_per_image": hvp_s / batch, "mixed_s_per_image": mixed_s / batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=sorted(BACKBONES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--batch", type=int, default=8, help="images per train/eval step")
    parser.add_argument("--second-order-batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    results = {"device": str(device), "threads": torch.get_num_threads(), "throughput": [], "second_order": []}
    for backbone in args.backbones:
        for size in args.sizes:
            row = throughput(backbone, size, args.batch, args.repeats, device)
            results["throughput"].append(row)
            print(json.dumps(row))
    for group in ("heads", "heads+fpn"):
        row = second_order("resnet18", 128, args.second_order_batch, group, args.repeats, device)
        results["second_order"].append(row)
        print(json.dumps(row))
    if args.out:
        atomic_write_json(args.out, results)


if __name__ == "__main__":
    main()
