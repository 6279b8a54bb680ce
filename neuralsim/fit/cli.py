"""The `neuralsim fit` command: fit a radiance field to a capture folder, with held-out PSNR/SSIM per
lighting condition, resumable checkpoints and the field written as safetensors + JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("fit")
    def fit_cmd(
        capture_dir: Annotated[Path, typer.Argument(help="Capture folder with transforms.json (neuralsim or nerfstudio).")],
        out: Annotated[Path, typer.Option(help="Field folder (field.safetensors, field.json, eval.json, metrics).")],
        steps: Annotated[int | None, typer.Option(help="Optimisation steps (default 1500; on --resume: the run's).")] = None,
        rays_per_step: Annotated[int, typer.Option(help="Rays in each random batch.")] = 4096,
        eval_every: Annotated[int, typer.Option(help="Steps between held-out evaluations (0: only at the end).")] = 500,
        seed: Annotated[int, typer.Option(help="Random seed (initialisation, ray batches, jitter).")] = 0,
        distortion_weight: Annotated[float | None, typer.Option(
            help="Weight of the distortion loss (default 0.1; 0: off): surfaces gather at one depth, so renders need "
                 "fewer samples.")] = None,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
        resume: Annotated[bool, typer.Option(help="Continue an interrupted fit in --out from its last checkpoint.")] = False,
        overwrite: Annotated[bool, typer.Option(help="Replace an output folder that holds files.")] = False,
    ) -> None:
        """Fit a radiance field (grid field with NeRF-W appearance) to a capture."""
        from neuralsim.errors import UserError
        from neuralsim.fit.trainer import FitConfig, fit
        from neuralsim.runtime import resolve_device

        bad = [f"--{name} {value}" for name, value, low in (("steps", steps, 1), ("rays-per-step", rays_per_step, 1),
                                                             ("eval-every", eval_every, 0))
               if value is not None and value < low]
        if bad:
            raise UserError(f"{', '.join(bad)}: steps and rays per step must be positive, eval-every 0 or more.")
        config = FitConfig(rays_per_step=rays_per_step, eval_every=eval_every, seed=seed)
        if distortion_weight is not None:
            if not distortion_weight >= 0:  # also catches NaN
                raise UserError(f"--distortion-weight must be 0 or more, not {distortion_weight}.")
            config.distortion_weight = distortion_weight
        if steps is not None:
            config.steps = steps
        evaluation = fit(capture_dir, out, config, device=resolve_device(device), resume=resume, overwrite=overwrite,
                         steps_given=steps is not None)
        for name, scores in evaluation.items():
            typer.echo(f"{name:>16}: PSNR {scores['psnr']:.2f} dB  SSIM {scores['ssim']:.4f}  ({scores['views']} views)")
        typer.echo(f"field written to {out}")
