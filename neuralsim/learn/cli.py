"""`neuralsim learn PROJECT --out DIR`: objects and labelled photos in, a learned dataset and a judged detector out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("learn")
    def learn_cmd(
        project: Annotated[Path, typer.Argument(help="Project file (JSON, YAML or TOML): objects, photos, settings.")],
        out: Annotated[Path, typer.Option(help="Output folder; a run of the same project there is resumed.")],
        overwrite: Annotated[bool, typer.Option(help="Start again in an output folder that holds another run.")] = False,
        ray: Annotated[str | None, typer.Option(
            "--ray", metavar="local|ADDRESS",
            help="Run the objects' captures and fields and the judge's trainings as Ray tasks, one core each (one GPU "
                 "each on CUDA): `local` starts a Ray on this machine's cores; HEAD:6379 (on a node of a cluster) or "
                 "ray://HEAD:10001 joins the cluster started by `ray start --head`, whose nodes must all see --out "
                 "and the cache (shared storage). The files are those of a run without it.")] = None,
    ) -> None:
        """Learn a training-data distribution for your objects from a few labelled photos, export the dataset, and
        judge it against domain randomisation (detectors from scratch, paired seeds, AP on your test photos)."""
        from neuralsim.distributed import make_executor
        from neuralsim.learn.pipeline import Learn
        from neuralsim.learn.project import load_project

        config = load_project(project)
        with make_executor(ray) as executor:
            summary = Learn(config, out, log=typer.echo, executor=executor).run(overwrite=overwrite)
        typer.echo(f"report: {out / 'report.html'}   dataset: {out / 'dataset'}   detector: {out / 'judge' / 'detector'}")
        typer.echo(summary["verdict"])
