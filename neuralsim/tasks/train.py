"""Detector training: seeded batch order, warm start or re-initialised θ, epochs or steps, optional flips,
a progress bar and losses logged to the run directory."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from neuralsim.errors import UserError
from neuralsim.runtime import RunDir, derive_seed, progress
from neuralsim.tasks.config import TrainConfig
from neuralsim.tasks.data import DetectionData, hflip, to_device
from neuralsim.tasks.detector import Detector, build_from_config
from neuralsim.tasks.second_order import select_params


@dataclass
class TrainSummary:
    steps: int
    images: int
    seconds: float
    final_loss: float  # mean total loss over the last logging window

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def batch_order(num_images: int, batch_size: int, seed: int, total_steps: int) -> list[list[int]]:
    """Index batches for `total_steps` steps: a fresh seeded permutation per epoch, last batch possibly short."""
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < total_steps:
        perm = torch.randperm(num_images, generator=torch.Generator().manual_seed(derive_seed(seed, "order", epoch)))
        batches += [perm[i : i + batch_size].tolist() for i in range(0, num_images, batch_size)]
        epoch += 1
    return batches[:total_steps]


def reinitialize(model: Detector, pattern: str, seed: int) -> None:
    """Redraw the parameters matching `pattern` from the builder's initialisation under `seed`."""
    fresh = dict(build_from_config(model.config, seed=seed).named_parameters())
    with torch.no_grad():
        for name, p in select_params(model, pattern).items():
            p.copy_(fresh[name])


def _optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise UserError(f"Training optimizer must be 'adamw' or 'sgd', not {config.optimizer!r}.")


def lr_factor(step: int, total: int, config: TrainConfig) -> float:
    """Learning-rate multiplier at `step` (0-based) of `total`: linear warm-up, then cosine or constant."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    done = (step - config.warmup_steps) / max(total - config.warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * done))


def check_train_config(config: TrainConfig) -> None:
    """Raise a `UserError` naming the first setting out of range."""
    if config.batch_size < 1 or (config.epochs < 1 and config.steps < 1) or config.lr <= 0:
        raise UserError("Training needs batch_size ≥ 1, epochs or steps ≥ 1 and lr > 0.")
    if config.schedule not in ("cosine", "constant") or config.init not in ("warm", "reinit"):
        raise UserError("Training schedule must be 'cosine' or 'constant' and init 'warm' or 'reinit'.")


def train_detector(model: Detector, data: DetectionData, config: TrainConfig, *, run: RunDir | None = None,
                   show_progress: bool = True) -> TrainSummary:
    """Train `model` in place on `data` (on the model's device); returns counts and timing."""
    check_train_config(config)
    if len(data) == 0:
        raise UserError("Cannot train a detector on an empty dataset.")
    if config.init == "reinit":
        reinitialize(model, config.trainable, config.seed)
    trained = set(select_params(model, config.trainable))
    named = {n: p for n, p in model.named_parameters() if n in trained}
    optimizer = _optimizer(list(named.values()), config)
    total = config.steps or config.epochs * math.ceil(len(data) / config.batch_size)
    param = next(iter(named.values()))
    model.train()
    window: list[torch.Tensor] = []
    start, images_seen, last_mean = time.perf_counter(), 0, float("nan")
    with progress(transient=not show_progress) as bar:
        task = bar.add_task("train detector", total=total, visible=show_progress)
        for step, indices in enumerate(batch_order(len(data), config.batch_size, config.seed, total)):
            images, targets = to_device(*data.batch(indices), param.device, param.dtype)
            if config.hflip:
                flip = torch.rand(len(indices), generator=torch.Generator().manual_seed(derive_seed(config.seed, "hflip", step)))
                images, targets = hflip(images, targets, flip.to(images.device) < 0.5)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(step, total, config)
            out = model(images, targets, detect=False)
            loss = out.loss_per_image().mean()
            if not torch.isfinite(loss):
                raise UserError(f"Detector training diverged (loss {loss.item()} at step {step}); lower the learning rate.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(named.values(), config.grad_clip)
            optimizer.step()
            images_seen += len(indices)
            window.append(torch.stack([v.detach().mean() for v in out.losses.values()]))
            if (step + 1) % config.log_every == 0 or step + 1 == total:
                means = torch.stack(window).mean(0)
                last_mean = float(means.sum())
                if run is not None:
                    run.log(step + 1, loss=last_mean, lr=optimizer.param_groups[0]["lr"],
                            **{k: float(m) for k, m in zip(out.losses, means)})
                window = []
            bar.update(task, advance=1, description=f"train detector · loss {last_mean:.3f}")
    return TrainSummary(total, images_seen, time.perf_counter() - start, last_mean)
