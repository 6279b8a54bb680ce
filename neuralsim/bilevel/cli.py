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
    @app.command("optimize", add_help_option=False,
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def optimize_cmd(
        ctx: typer.Context,
        config: Annotated[Path | None, typer.Argument(help="Optimize config JSON: fields, val and test at least.")] = None,
        out: Annotated[Path | None, typer.Option(help="Run folder: config.json, metrics.jsonl, psi.json, checkpoint/, report.")] = None,
        resume: Annotated[bool, typer.Option(help="Continue an interrupted run in OUT from its last checkpoint.")] = False,
        overwrite: Annotated[bool, typer.Option(help="Replace a run folder that holds files.")] = False,
    ) -> None:
        """Learn ψ by bilevel optimisation against the validation set; logs every outer step.

        Any setting of the config may follow (`--steps 5 --seed 1`, then the method and its own settings:
        `method:nso --method.tau 0.2`); `--help` lists them all with the config's values. With --resume the run's own config.json is used (CONFIG may be
        left out) and only --steps may change."""
        import inspect

        from neuralsim.bilevel.config import OptimizeConfig, load_config
        from neuralsim.bilevel.loop import BilevelRun
        from neuralsim.experiments.run_report import write_run_report
        from neuralsim.runtime import RunDir, read_json, to_plain
        from neuralsim.schema import from_args, from_plain

        prog = "neuralsim optimize CONFIG --out DIR [--resume] [--overwrite]"
        args = list(ctx.args)
        if config is not None and str(config).startswith(("-", "method:")):  # a setting where CONFIG would be
            config, args = None, [str(config), *args]
        if resume and out is not None:
            RunDir.check_version(out)
            base = from_plain(OptimizeConfig, read_json(out / "config.json", "Run config"), f"Run config {out}")
        else:
            base = load_config(config) if config is not None and "--help" not in args else OptimizeConfig()
        cfg = from_args(OptimizeConfig, base, args, prog, inspect.cleandoc(optimize_cmd.__doc__))
        if out is None or (config is None and not resume):
            raise UserError(f"usage: {prog} [SETTINGS]; --help lists the settings.")
        if resume:
            changed = [k for k, v in to_plain(cfg).items() if k != "steps" and v != to_plain(base)[k]]
            if changed:
                raise UserError(f"--resume continues the run with its own {out / 'config.json'}; only --steps may "
                                f"change, not {', '.join(changed)}.")

        def show(t: int, record) -> None:
            ap = "–" if record.test_ap is None else f"{100 * record.test_ap:.1f}"
            typer.echo(f"step {t:3d}  val loss {record.val_loss:.4f}  test AP {ap}  {record.seconds['total']:.1f} s")

        path = BilevelRun(cfg, out, resume=resume, overwrite=overwrite).run_all(show)
        typer.echo(f"report: {write_run_report(path)}")

    @app.command("render")
    def render_cmd(
        fields: Annotated[list[str], typer.Argument(help="OBJECT=FIELD_DIR for each object of ψ.")],
        psi: Annotated[Path, typer.Option(help="ψ file (e.g. the psi.json of an optimize run).")],
        out: Annotated[Path, typer.Option(help="Output folder: the COCO set (images/ + annotations.json), and yolo/.")],
        n: Annotated[int, typer.Option("--n", help="Images per object (each image shows its object and maybe others).")] = 100,
        quota: Annotated[list[str] | None, typer.Option(help="OBJECT=N: N images of this object instead of --n.")] = None,
        objects_per_image: Annotated[int, typer.Option(help="Most objects in one image.")] = 1,
        format: Annotated[list[str] | None, typer.Option(help="coco (always) and yolo.")] = None,
        size: Annotated[int, typer.Option(help="Image size in pixels.")] = 64,
        fov: Annotated[float, typer.Option(help="Horizontal field of view in degrees.")] = 40.0,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        overwrite: Annotated[bool, typer.Option(help="Replace an output folder that holds files.")] = False,
    ) -> None:
        """Render a labelled COCO dataset from fields under ψ (images, boxes, masks, render parameters)."""
        from neuralsim.bilevel.export import export_dataset
        from neuralsim.bilevel.field_source import SourceConfig
        from neuralsim.sampling.psi import Psi

        if size <= 0:
            raise UserError(f"--size must be a positive number of pixels, got {size}.")
        quotas = {o: n for o in Psi.load(psi).objects}
        for pair in quota or []:
            name, sep, count = pair.partition("=")
            if not sep or not count.strip().isdigit():
                raise UserError(f"Quotas are given as OBJECT=N, got {pair!r}.")
            quotas[name] = int(count)
        formats = tuple(dict.fromkeys(["coco", *(format or [])]))
        source = SourceConfig(size=size, fov_deg=fov, objects_per_image=objects_per_image, seed=seed)
        typer.echo(str(export_dataset(_field_pairs(fields), psi, quotas, out, source, seed=seed, overwrite=overwrite,
                                      formats=formats)))
