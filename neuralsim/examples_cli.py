"""Commands of the examples: `examples make-photos`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    examples = typer.Typer(help="Example data to try neuralsim on.", no_args_is_help=True)
    app.add_typer(examples, name="examples")

    @examples.command("make-photos")
    def make_photos(
        out: Annotated[Path, typer.Argument(help="Output COCO folder (images/ + annotations.json + "
                                                 "target-distribution.json).")],
        photos: Annotated[int, typer.Option(help="Number of photos.")] = 60,
        width: Annotated[int, typer.Option(help="Photo width in pixels.")] = 320,
        height: Annotated[int, typer.Option(help="Photo height in pixels.")] = 240,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        spp: Annotated[int, typer.Option(help="Path-tracing samples per pixel.")] = 16,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
        overwrite: Annotated[bool, typer.Option(help="Replace an output folder that holds files.")] = False,
    ) -> None:
        """Render labelled example "photos" of four built-in objects in a foreign domain: 4:3, a longer lens, 2–4
        objects each, photographic backgrounds, noise, blur and JPEG, seen from higher up and nearer in one light."""
        from neuralsim.examples import make_example_photos
        from neuralsim.runtime import resolve_device

        typer.echo(str(make_example_photos(out, photos=photos, width=width, height=height, seed=seed, spp=spp,
                                           overwrite=overwrite, device=resolve_device(device).type)))
