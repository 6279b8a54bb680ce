"""Commands of the bilevel part: `optimize` (learn ψ) and `render` (export a dataset under a ψ)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuralsim.errors import UserError


def _field_pairs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise UserError(f"Fields are given as OBJECT=FIELD_DIR, got {pair!r}.")
        out[name] = path
    return out


def register(app: typer.Typer) -> None:
    @app.command("optimize")
    def optimize_cmd(
        config: Annotated[Path, typer.Argument(help="Optimize config JSON (see docs: fields, val, test, method, …).")],
        out: Annotated[Path, typer.Option(help="Run folder: config.json, metrics.jsonl, psi.json, checkpoint/, report.")],
        method: Annotated[str | None, typer.Option(help="Override: ns, nso, autosim, influence or lts (its settings from the config when it names the same method, else its defaults).")] = None,
        steps: Annotated[int | None, typer.Option(help="Override: number of outer steps.")] = None,
        seed: Annotated[int | None, typer.Option(help="Override: random seed.")] = None,
        device: Annotated[str | None, typer.Option(help="Override: auto, cpu or cuda.")] = None,
        resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT from its last checkpoint.")] = False,
        overwrite: Annotated[bool, typer.Option(help="Replace a run folder that holds files.")] = False,
    ) -> None:
        """Learn ψ by bilevel optimisation against the validation set; logs every outer step.

        The smallest config names the fields, the validation set and the test set; every other setting has a
        default (docs/config.md)."""
        import dataclasses

        from neuralsim.bilevel.config import OptimizeConfig, load_config
        from neuralsim.bilevel.estimators import method_config
        from neuralsim.bilevel.loop import BilevelRun
        from neuralsim.experiments.run_report import write_run_report
        from neuralsim.runtime import RunDir, read_json
        from neuralsim.schema import from_plain

        if resume:
            ignored = [f"--{k}" for k, v in {"method": method, "seed": seed, "device": device}.items() if v is not None]
            if ignored:
                raise UserError(f"--resume continues the run with its own {out / 'config.json'}; only --steps may "
                                f"change, not {', '.join(ignored)}.")
            RunDir.check_version(out)
            cfg = from_plain(OptimizeConfig, read_json(out / "config.json", "Run config"), f"Run config {out}")
        else:
            cfg = load_config(config)
            if method is not None and method != cfg.method.method:
                cfg = dataclasses.replace(cfg, method=method_config(method))
            cfg = dataclasses.replace(cfg, **{k: v for k, v in {"seed": seed, "device": device}.items() if v is not None})
        if steps is not None:
            cfg = dataclasses.replace(cfg, steps=steps)

        def show(t: int, record) -> None:
            ap = "–" if record.test_ap is None else f"{100 * record.test_ap:.1f}"
            typer.echo(f"step {t:3d}  val loss {record.val_loss:.4f}  test AP {ap}  {record.seconds['total']:.1f} s")

        path = BilevelRun(cfg, out, resume=resume, overwrite=overwrite).run_all(show)
        typer.echo(f"report: {write_run_report(path)}")

    @app.command("render")
    def render_cmd(
        fields: Annotated[list[str], typer.Argument(help="OBJECT=FIELD_DIR for each object of ψ.")],
        psi: Annotated[Path, typer.Option(help="ψ file (e.g. the psi.json of an optimize run).")],
        out: Annotated[Path, typer.Option(help="Output COCO folder (images/ + annotations.json).")],
        n: Annotated[int, typer.Option("--n", help="Images per object.")] = 100,
        size: Annotated[int, typer.Option(help="Image size in pixels.")] = 64,
        fov: Annotated[float, typer.Option(help="Horizontal field of view in degrees.")] = 40.0,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        overwrite: Annotated[bool, typer.Option(help="Replace an output folder that holds files.")] = False,
    ) -> None:
        """Render a labelled COCO dataset from fields under ψ (images, boxes, masks, render parameters)."""
        from neuralsim.bilevel.export import export_dataset
        from neuralsim.bilevel.field_source import SourceConfig

        if size <= 0:
            raise UserError(f"--size must be a positive number of pixels, got {size}.")
        typer.echo(str(export_dataset(_field_pairs(fields), psi, n, out, SourceConfig(size=size, fov_deg=fov, seed=seed),
                                      seed=seed, overwrite=overwrite)))
