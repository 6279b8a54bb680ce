"""Fitting a grid field to a capture: random ray batches, premultiplied-colour and alpha losses, occupancy
from the visual hull then from the density, held-out PSNR/SSIM per lighting condition, resumable checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from neuralsim.cameras import camera_rays
from neuralsim.data.transforms import Capture, load_capture
from neuralsim.errors import UserError
from neuralsim.fields.checkpoint import save_field
from neuralsim.fields.grid import GridField, GridFieldConfig
from neuralsim.fields.occupancy import dilate, visual_hull
from neuralsim.fit.metrics import psnr, ssim
from neuralsim.render.camera import render_view
from neuralsim.render.labels import composite
from neuralsim.render.volume import ObjectRays, RenderConfig, ray_box, render_rays
from neuralsim.runtime import RunDir, atomic_write_bytes, atomic_write_json, derive_seed, progress, to_plain
from neuralsim.schema import from_plain

TRAIN_STATE_FILE = "train_state.safetensors"
TRAIN_STATE_VERSION = 2
EVAL_FILE = "eval.json"
EVAL_BACKGROUND = 1.0  # held-out views are compared composited over white


@dataclass
class FitConfig:
    steps: int = 1500
    """Optimisation steps."""
    rays_per_step: int = 4096
    """Rays in each random batch (drawn from all training pixels)."""
    lr_density: float = 0.3
    """Adam learning rate of the density grid, higher than the colour grid's so that a short fit makes surfaces
    opaque rather than translucent (docs/notebook/)."""
    lr_grid: float = 0.1
    """Adam learning rate of the colour-feature grid."""
    lr_mlp: float = 1e-3
    """Adam learning rate of the colour MLP."""
    lr_appearance: float = 1e-2
    """Adam learning rate of the appearance embeddings."""
    lr_final_fraction: float = 0.1
    """Learning rates decay exponentially to this fraction at the last step."""
    distortion_weight: float = 0.1
    """Weight of mip-NeRF 360's distortion loss, which gathers each ray's weights at one depth: a sharper surface
    needs fewer samples per ray, so every later render (pass 1 and 2 of the loop) is cheaper."""
    tv_density: float = 4e-7
    """Weight of the density grid's total variation (its squared gradient per object unit, averaged over the grid). With
    `tv_features` and `appearance_spread` it keeps a long fit from memorising the training views, so that the held-out
    PSNR keeps rising as the fit goes on (docs/notebook/)."""
    tv_features: float = 2e-5
    """Weight of the colour-feature grid's total variation (as `tv_density`); small, since a texture may be sharper
    than the grid's vertices."""
    appearance_spread: float = 1e-2
    """Weight of the appearance embeddings' mean squared distance from their lighting condition's anchor. Renders use
    the anchors, so the per-image embeddings are kept near them (free ones drift apart and the anchor renders worse)."""
    hull_threshold: float = 0.05
    """Alpha at or below which a training pixel carves space from the visual hull."""
    occupancy_start: int = 200
    """First step at which occupancy is refreshed from the density (before: the visual hull only)."""
    occupancy_every: int = 100
    """Steps between occupancy refreshes."""
    occupancy_min_alpha: float = 2e-2
    """Cells whose one-step opacity stays below this are skipped (above the field's initial_alpha, so that
    space the fit never made opaque is dropped)."""
    eval_every: int = 500
    """Steps between held-out evaluations (and at the end); 0: only at the end."""
    checkpoint_every: int = 250
    """Steps between resumable checkpoints."""
    first_checkpoint: int = 25
    """Step of the first checkpoint, so that a fit stopped early goes on from there."""
    seed: int = 0
    """Seed of the field initialisation, the ray batches and the sample jitter."""
    field: GridFieldConfig = dataclass_field(default_factory=GridFieldConfig)
    """The grid field's configuration."""


@dataclass
class FitRun:
    """A fit's config.json: its settings and the capture it fits."""

    fit: FitConfig
    capture: str


@dataclass
class RayBank:
    """Every training pixel whose ray meets the object box: rays, straight RGBA target, image index."""

    origins: Tensor  # (N, 3)
    dirs: Tensor  # (N, 3)
    rgba: Tensor  # (N, 4)
    image: Tensor  # (N,) index into the field's appearance embeddings


def load_images(capture: Capture, split: str) -> tuple[Tensor, Tensor]:
    """Straight RGBA (V, H, W, 4) and camera-to-world (V, 4, 4) of a split's frames."""
    frames = capture.frames_of(split)
    rgba = torch.from_numpy(np.stack([capture.load_rgba(f) for f in frames]))
    c2ws = torch.from_numpy(np.stack([f.c2w for f in frames])).float()
    return rgba, c2ws


def ray_bank(capture: Capture, rgba: Tensor, c2ws: Tensor, bound: float, device: torch.device) -> RayBank:
    origins, dirs, targets, images = [], [], [], []
    for i, (image, c2w) in enumerate(zip(rgba, c2ws)):
        o, d = camera_rays(c2w, capture.intrinsics)  # (H*W, 3)
        t_near, t_far = ray_box(o, d, bound)
        hit = t_far > t_near
        origins.append(o[hit]), dirs.append(d[hit]), targets.append(image.reshape(-1, 4)[hit])
        images.append(torch.full((int(hit.sum()),), i, dtype=torch.long))
    return RayBank(*(torch.cat(x).to(device) for x in (origins, dirs, targets, images)))


def make_optimizer(field: GridField, config: FitConfig) -> torch.optim.Adam:
    return torch.optim.Adam([
        {"params": [field.density_grid], "lr": config.lr_density, "base_lr": config.lr_density},
        {"params": [field.feature_grid], "lr": config.lr_grid, "base_lr": config.lr_grid},
        {"params": list(field.colour_mlp.parameters()), "lr": config.lr_mlp, "base_lr": config.lr_mlp},
        {"params": [field.appearance.embeddings], "lr": config.lr_appearance, "base_lr": config.lr_appearance},
    ], betas=(0.9, 0.99))


def train_step(field: GridField, optimizer: torch.optim.Adam, bank: RayBank, config: FitConfig, step: int) -> dict[str, float]:
    """One Adam step on a random ray batch; the batch and the jitter are seeded by (seed, step)."""
    generator = torch.Generator(device=bank.origins.device).manual_seed(derive_seed(config.seed, "fit", step))
    ids = torch.randint(len(bank.origins), (config.rays_per_step,), generator=generator, device=bank.origins.device)
    embeddings = field.appearance.embeddings[bank.image[ids]]  # (B, E)
    out = render_rays([ObjectRays(field.fns(embeddings), bank.origins[ids], bank.dirs[ids])], generator=generator)
    target = bank.rgba[ids]
    target_rgb = target[:, :3] * target[:, 3:]  # premultiplied, like the render
    colour_loss = F.mse_loss(out.rgb, target_rgb)
    loss = colour_loss + F.mse_loss(out.alpha, target[:, 3])
    if config.distortion_weight:
        loss = loss + config.distortion_weight * out.distortion().mean()
    if config.appearance_spread:
        loss = loss + config.appearance_spread * field.appearance.spread()
    if config.tv_density or config.tv_features:
        tv_density, tv_features = field.total_variation()
        loss = loss + config.tv_density * tv_density + config.tv_features * tv_features
    decay = config.lr_final_fraction ** (step / max(config.steps, 1))
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * decay
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "train_psnr": -10.0 * np.log10(max(colour_loss.item(), 1e-12))}


@torch.no_grad()
def evaluate(field: GridField, capture: Capture, split: str = "test") -> dict[str, Any]:
    """Held-out PSNR and SSIM per lighting condition (each view rendered with its condition's anchor)."""
    rgba, c2ws = load_images(capture, split)
    device = next(field.parameters()).device
    per_condition: dict[str, list[tuple[float, float]]] = {}
    for frame, target, c2w in zip(capture.frames_of(split), rgba, c2ws):
        out = render_view(field, c2w.to(device), capture.intrinsics, frame.appearance_id)
        background = torch.full_like(out.rgb, EVAL_BACKGROUND)
        prediction = composite(out.rgb, out.alpha, background).clamp(0, 1).cpu()
        expected = composite(target[..., :3] * target[..., 3:], target[..., 3], background.cpu())
        name = capture.appearance_names[frame.appearance_id]
        per_condition.setdefault(name, []).append((psnr(prediction, expected), ssim(prediction, expected)))
    result = {name: {"psnr": float(np.mean([p for p, _ in v])), "ssim": float(np.mean([s for _, s in v])), "views": len(v)}
              for name, v in per_condition.items()}
    all_views = [x for v in per_condition.values() for x in v]
    result["mean"] = {"psnr": float(np.mean([p for p, _ in all_views])), "ssim": float(np.mean([s for _, s in all_views])),
                      "views": len(all_views)}
    return result


def save_train_state(path: Path, field: GridField, optimizer: torch.optim.Adam, step: int, train_seconds: float) -> None:
    from safetensors.torch import save

    tensors = {f"field.{k}": v.detach().cpu().contiguous() for k, v in field.state_dict().items()}
    state = optimizer.state_dict()
    for index, slots in state["state"].items():
        tensors.update({f"optim.{index}.{k}": torch.as_tensor(v).detach().cpu().contiguous() for k, v in slots.items()})
    meta = {"format_version": str(TRAIN_STATE_VERSION), "step": str(step), "train_seconds": repr(train_seconds), "param_groups": json.dumps(to_plain(state["param_groups"]))}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_train_state(path: Path, field: GridField, optimizer: torch.optim.Adam) -> tuple[int, float]:
    """Restore field and optimizer from a checkpoint; returns (step, train seconds so far)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format_version") != str(TRAIN_STATE_VERSION):
        raise UserError(f"Cannot resume: {path} has checkpoint format version {meta.get('format_version')!r}, but this "
                        f"neuralsim writes version {TRAIN_STATE_VERSION}; start the fit again with --overwrite.")
    device = next(field.parameters()).device
    field.load_state_dict({k[len("field."):]: v for k, v in tensors.items() if k.startswith("field.")})
    slots: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
    optimizer.load_state_dict({"state": slots, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"]), float(meta["train_seconds"])


def build_field(capture: Capture, config: FitConfig, device: torch.device) -> GridField:
    train_ids = torch.tensor([f.appearance_id for f in capture.frames_of("train")], dtype=torch.long)
    field = GridField(config.field, train_ids, capture.num_appearances, seed=config.seed,
                      appearance_names=capture.appearance_names)
    return field.to(device)


def fit(capture_dir: str | Path, out: str | Path, config: FitConfig, *, device: torch.device,
        resume: bool = False, overwrite: bool = False, steps_given: bool = True, show_progress: bool = True) -> dict[str, Any]:
    """Fit a field to the capture in `capture_dir`, writing checkpoints, metrics and the final field to `out`.

    With `resume`, the run's own config is used (its step count too, unless `steps_given`), from its last checkpoint,
    or from the start when it was stopped before the first. Returns the final held-out evaluation (PSNR/SSIM per
    lighting condition and their mean).
    """
    capture = load_capture(capture_dir)  # every image decoded: a bad capture is refused before `out` is made
    capture_path = str(Path(capture_dir).resolve())
    if resume:
        run = RunDir(out, resume=True)
        saved = from_plain(FitRun, run.config, f"Run config {out / 'config.json'}")
        if Path(saved.capture) != Path(capture_path):
            raise UserError(f"{out} is a fit of the capture {saved.capture}, not of {capture_path}; resume it with its "
                            "own capture.")
        config = dataclasses.replace(saved.fit, steps=config.steps) if steps_given else saved.fit
    else:
        run = RunDir(out, FitRun(config, capture_path), overwrite=overwrite)
    try:
        return _fit(capture, run, config, device, resume, show_progress)
    finally:
        run.close()


def _fit(capture: Capture, run: RunDir, config: FitConfig, device: torch.device, resume: bool,
         show_progress: bool) -> dict[str, Any]:
    rgba, c2ws = load_images(capture, "train")
    bound = RenderConfig().bound
    bank = ray_bank(capture, rgba, c2ws, bound, device)
    hull = dilate(visual_hull(config.field.occupancy_resolution, c2ws, capture.intrinsics, rgba[..., 3],
                              config.hull_threshold)).to(device)
    field = build_field(capture, config, device)
    optimizer = make_optimizer(field, config)
    step, train_seconds = 0, 0.0
    if resume and (run.path / TRAIN_STATE_FILE).is_file():
        step, train_seconds = load_train_state(run.path / TRAIN_STATE_FILE, field, optimizer)
    else:
        field.occupancy.copy_(hull)
    if resume:
        run.truncate_metrics(step)
    with progress(transient=not show_progress) as bar:
        task = bar.add_task("fit", total=config.steps, completed=step)
        while step < config.steps:
            started = time.perf_counter()
            if step >= config.occupancy_start and step % config.occupancy_every == 0:
                field.update_occupancy(config.occupancy_min_alpha, within=hull)
            scalars = train_step(field, optimizer, bank, config, step)
            train_seconds += time.perf_counter() - started
            step += 1
            bar.update(task, advance=1, description=f"fit  loss {scalars['loss']:.4f}")
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                evaluation = evaluate(field, capture)
                run.log(step, **scalars, train_seconds=train_seconds, test=evaluation)
            elif step % 50 == 0:
                run.log(step, **scalars, train_seconds=train_seconds)
            if step % config.checkpoint_every == 0 or step in (config.first_checkpoint, config.steps):
                save_train_state(run.path / TRAIN_STATE_FILE, field, optimizer, step, train_seconds)
    evaluation = evaluate(field, capture)
    run.log(step, train_seconds=train_seconds, test=evaluation)
    save_field(field, run.path, meta={"capture": capture.meta, "train_seconds": train_seconds, "steps": step})
    atomic_write_json(run.path / EVAL_FILE, {"steps": step, "train_seconds": train_seconds, "test": evaluation})
    return evaluation
