"""Train the original NeRF (`vanilla_nerf.py`: 8×256 MLPs, positional encoding, 64 coarse + 128 fine samples) on a
capture for a wall-clock budget and record held-out PSNR against training time, for comparing the grid field
with vanilla NeRF at equal time or equal PSNR.

    python benchmarks/train_vanilla_nerf.py CAPTURE_DIR --seconds 600 --rays 1024 --eval-every 60 --out result.json \
        --lighting studio --threads 1 --seed 0

The data conventions are those of the grid fit (`neuralsim/fit/trainer.py`), reused by import: training rays are
the training pixels whose ray meets the object box [-bound, bound]³ (`ray_bank`), every ray is sampled between its
own box entry and exit (`ray_box`, the interval the grid renderer samples), and held-out PSNR is `evaluate`'s:
prediction and target composited over EVAL_BACKGROUND (white), prediction clamped to [0, 1], PSNR per view, mean
over views (here over the test views of the trained lighting only, at most `--max-test-views` of them). Training follows the original NeRF: one lighting condition (no appearance embedding), random batches
of `--rays` rays, loss = MSE(coarse) + MSE(fine) on colour composited over that same background, Adam at 5e-4
decaying exponentially, ×0.1 per 250k steps. Evaluation time is not counted in the training clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vanilla_nerf import COARSE_SAMPLES, FINE_SAMPLES, VanillaNeRF, _composite, _sample_pdf

from neuralsim.cameras import camera_rays
from neuralsim.data.transforms import Capture, load_capture
from neuralsim.errors import UserError
from neuralsim.fit.metrics import psnr, ssim
from neuralsim.fit.trainer import EVAL_BACKGROUND, RayBank, load_images, ray_bank
from neuralsim.render.labels import composite
from neuralsim.render.volume import RenderConfig, ray_box
from neuralsim.runtime import atomic_write_json, derive_seed, resolve_device

LEARNING_RATE = 5e-4
LR_DECAY_RATE, LR_DECAY_STEPS = 0.1, 250_000  # original NeRF: lrate_decay = 250 (thousand steps)
ADAM_BETAS = (0.9, 0.999)


@dataclass
class Settings:
    capture: str
    seconds: float
    rays: int
    eval_every: float
    lighting: str | None
    threads: int
    seed: int
    max_test_views: int
    chunk: int
    device: str


class RayColour(NamedTuple):
    rgb: Tensor  # (R, 3) premultiplied (over black)
    alpha: Tensor  # (R,) accumulated opacity


def render_hierarchical(coarse: VanillaNeRF, fine: VanillaNeRF, origins: Tensor, dirs: Tensor, near: Tensor,
                        far: Tensor, generator: torch.Generator, perturb: bool = True) -> tuple[RayColour, RayColour]:
    """`render_vanilla` with a per-ray interval [near, far] (R,), returning the coarse and the fine render.

    64 stratified samples (stratum midpoints when not `perturb`) go through the coarse network; 128 more are drawn
    from its weights and all 192 go through the fine network, as in the original NeRF.
    """
    strata = torch.arange(COARSE_SAMPLES, device=origins.device, dtype=origins.dtype)
    offsets = (torch.rand(len(origins), COARSE_SAMPLES, generator=generator, device=origins.device) if perturb
               else torch.full((len(origins), COARSE_SAMPLES), 0.5, device=origins.device))
    t_coarse = near[:, None] + (strata + offsets) / COARSE_SAMPLES * (far - near)[:, None]  # (R, 64)
    rgb_coarse, weights_coarse = _composite(coarse, origins, dirs, t_coarse)
    bins = torch.cat([t_coarse, far[:, None]], dim=1)  # (R, 65)
    t_fine = _sample_pdf(bins, weights_coarse.detach(), FINE_SAMPLES, generator)
    t_all, _ = torch.sort(torch.cat([t_coarse, t_fine.detach()], dim=1), dim=1)  # (R, 192)
    rgb_fine, weights_fine = _composite(fine, origins, dirs, t_all)
    return RayColour(rgb_coarse, weights_coarse.sum(1)), RayColour(rgb_fine, weights_fine.sum(1))


def over_background(out: RayColour) -> Tensor:
    """The render composited over the grid fit's evaluation background (white)."""
    return composite(out.rgb, out.alpha, torch.full_like(out.rgb, EVAL_BACKGROUND))


def one_lighting(capture: Capture, lighting: str | None, max_test_views: int) -> tuple[Capture, str]:
    """The capture restricted to the frames of one lighting condition (default the first), with at most
    `max_test_views` test views, evenly spread over that condition's test split."""
    name = capture.appearance_names[0] if lighting is None else lighting
    if name not in capture.appearance_names:
        raise UserError(f"Lighting {name!r} is not in the capture; it has {', '.join(capture.appearance_names)}.")
    appearance = capture.appearance_names.index(name)
    splits = {s: [i for i in ids if capture.frames[i].appearance_id == appearance] for s, ids in capture.splits.items()}
    if not splits["train"] or not splits["test"]:
        raise UserError(f"Lighting {name!r} has {len(splits['train'])} training and {len(splits['test'])} test frames; "
                        "both must be non-empty.")
    test = splits["test"]
    if len(test) > max_test_views:
        splits["test"] = [test[int(k)] for k in np.linspace(0, len(test) - 1, max_test_views).round()]
    return dataclasses.replace(capture, splits=splits), name


def learning_rate(step: int) -> float:
    return LEARNING_RATE * LR_DECAY_RATE ** (step / LR_DECAY_STEPS)


def train_step(coarse: VanillaNeRF, fine: VanillaNeRF, optimizer: torch.optim.Adam, bank: RayBank, bound: float,
               rays: int, step: int, generator: torch.Generator) -> float:
    """One Adam step on a random batch of training rays; returns the loss (coarse + fine MSE)."""
    ids = torch.randint(len(bank.origins), (rays,), generator=generator, device=bank.origins.device)
    origins, dirs, target = bank.origins[ids], bank.dirs[ids], bank.rgba[ids]
    near, far = ray_box(origins, dirs, bound)
    out_coarse, out_fine = render_hierarchical(coarse, fine, origins, dirs, near, far, generator)
    expected = over_background(RayColour(target[:, :3] * target[:, 3:], target[:, 3]))
    loss = F.mse_loss(over_background(out_coarse), expected) + F.mse_loss(over_background(out_fine), expected)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def evaluate(coarse: VanillaNeRF, fine: VanillaNeRF, capture: Capture, bound: float, chunk: int, seed: int,
             device: torch.device) -> dict[str, float]:
    """Mean held-out PSNR and SSIM over the capture's test views, as `neuralsim.fit.trainer.evaluate` computes them
    (rays that miss the object box stay transparent, as in the grid renderer)."""
    generator = torch.Generator(device=device).manual_seed(derive_seed(seed, "vanilla_nerf", "eval"))
    rgba, c2ws = load_images(capture, "test")
    scores = []
    for target, c2w in zip(rgba, c2ws):
        origins, dirs = (x.to(device) for x in camera_rays(c2w, capture.intrinsics))
        near, far = ray_box(origins, dirs, bound)
        hit = (far > near).nonzero(as_tuple=True)[0]
        rgb = torch.zeros(len(origins), 3, device=device)
        alpha = torch.zeros(len(origins), device=device)
        for part in hit.split(chunk):
            _, out = render_hierarchical(coarse, fine, origins[part], dirs[part], near[part], far[part], generator,
                                         perturb=False)
            rgb[part], alpha[part] = out.rgb, out.alpha
        shape = (capture.intrinsics.height, capture.intrinsics.width)
        prediction = over_background(RayColour(rgb.reshape(*shape, 3), alpha.reshape(shape))).clamp(0, 1).cpu()
        expected = over_background(RayColour(target[..., :3] * target[..., 3:], target[..., 3]))
        scores.append((psnr(prediction, expected), ssim(prediction, expected)))
    return {"psnr": float(np.mean([p for p, _ in scores])), "ssim": float(np.mean([s for _, s in scores]))}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(settings: Settings) -> dict[str, Any]:
    """Train until `settings.seconds` of training time are spent, evaluating every `settings.eval_every` seconds."""
    torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    capture, lighting = one_lighting(load_capture(settings.capture), settings.lighting, settings.max_test_views)
    bound = RenderConfig().bound
    rgba, c2ws = load_images(capture, "train")
    bank = ray_bank(capture, rgba, c2ws, bound, device)
    torch.manual_seed(settings.seed)
    coarse, fine = VanillaNeRF().to(device), VanillaNeRF().to(device)
    optimizer = torch.optim.Adam([*coarse.parameters(), *fine.parameters()], lr=LEARNING_RATE, betas=ADAM_BETAS)
    generator = torch.Generator(device=device).manual_seed(derive_seed(settings.seed, "vanilla_nerf", "train"))

    curve: list[dict[str, float]] = []
    step, train_seconds, loss = 0, 0.0, float("nan")
    next_eval = settings.eval_every
    while True:
        if train_seconds >= next_eval or train_seconds >= settings.seconds:
            started = time.perf_counter()
            scores = evaluate(coarse, fine, capture, bound, settings.chunk, settings.seed, device)
            record = {"train_seconds": train_seconds, "steps": step, **scores, "train_loss": loss,
                      "eval_seconds": time.perf_counter() - started}
            curve.append(record)
            print(f"{train_seconds:8.1f} s  {step:7d} steps  held-out PSNR {scores['psnr']:6.2f} dB  SSIM "
                  f"{scores['ssim']:.3f}  train loss {loss:.5f}  (eval {record['eval_seconds']:.1f} s)", flush=True)
            while next_eval <= train_seconds:
                next_eval += settings.eval_every
            if train_seconds >= settings.seconds:
                break
        started = time.perf_counter()
        loss = train_step(coarse, fine, optimizer, bank, bound, settings.rays, step, generator)
        synchronize(device)
        train_seconds += time.perf_counter() - started
        step += 1
    return {
        "method": "vanilla_nerf",
        "settings": dataclasses.asdict(settings),
        "lighting": lighting,
        "data": {"train_views": len(capture.splits["train"]), "train_rays": len(bank.origins),
                 "test_views": [capture.frames[i].file_path for i in capture.splits["test"]],
                 "bound": bound, "background": EVAL_BACKGROUND,
                 "image_size": [capture.intrinsics.width, capture.intrinsics.height]},
        "model": {"coarse_samples": COARSE_SAMPLES, "fine_samples": FINE_SAMPLES, "learning_rate": LEARNING_RATE,
                  "lr_decay": f"x{LR_DECAY_RATE} per {LR_DECAY_STEPS} steps", "adam_betas": list(ADAM_BETAS),
                  "parameters": sum(p.numel() for p in [*coarse.parameters(), *fine.parameters()])},
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "curve": curve,
    }


def parse_args(argv: list[str] | None = None) -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("capture", help="Capture folder (or its transforms.json).")
    parser.add_argument("--seconds", type=float, default=600.0, help="Training-time budget (evaluation excluded).")
    parser.add_argument("--rays", type=int, default=1024, help="Rays per training batch.")
    parser.add_argument("--eval-every", type=float, default=60.0, help="Training seconds between held-out evaluations.")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the curve and the settings.")
    parser.add_argument("--lighting", default=None,
                        help="Lighting condition to train and test on; none: the capture's first.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the initialisation, the batches and the samples.")
    parser.add_argument("--max-test-views", type=int, default=8,
                        help="Test views rendered at each evaluation (at most; evenly spread over the test split).")
    parser.add_argument("--chunk", type=int, default=1024, help="Rays per no-grad chunk when rendering test views.")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda.")
    args = parser.parse_args(argv)
    for name in ("seconds", "rays", "eval_every", "threads", "max_test_views", "chunk"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    options = {k: v for k, v in vars(args).items() if k not in ("capture", "out")}
    return Settings(capture=str(Path(args.capture).resolve()), **options), args.out


def main(argv: list[str] | None = None) -> int:
    settings, out = parse_args(argv)
    try:
        result = train(settings)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
