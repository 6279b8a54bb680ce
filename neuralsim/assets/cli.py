"""Commands of the ground-truth part: `objects list|preview`, `capture`, `scenes`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuralsim.errors import UserError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _pair(text: str, what: str, cast=float) -> tuple:
    parts = _csv(text)
    try:
        values = tuple(cast(p) for p in parts)
    except ValueError:
        raise UserError(f"{what} must be one number or two separated by a comma, got {text!r}.") from None
    if len(values) == 1:
        return values * 2
    if len(values) != 2:
        raise UserError(f"{what} must be one number or two separated by a comma, got {text!r}.")
    return values


def register(app: typer.Typer) -> None:
    objects = typer.Typer(help="The built-in object set (21 YCB-Video shapes with product-like designs).", no_args_is_help=True)
    app.add_typer(objects, name="objects")

    @objects.command("list")
    def objects_list() -> None:
        """List the built-in objects (the paper's six are marked with *)."""
        from neuralsim.assets.catalog import PAPER_SIX, YCB_VIDEO

        for name, design in YCB_VIDEO.items():
            typer.echo(f"{'*' if name in PAPER_SIX else ' '} {name:26s} {design.label}")

    @objects.command("preview")
    def objects_preview(
        names: Annotated[list[str], typer.Argument(help="Object names or mesh paths; 'paper' for the paper's six.")],
        out: Annotated[Path, typer.Option(help="Output PNG.")] = Path("objects.png"),
        size: Annotated[int, typer.Option(help="Tile size in pixels.")] = 96,
        lighting: Annotated[str, typer.Option(help="Lighting condition.")] = "studio",
    ) -> None:
        """Write a contact sheet: each object from 8 azimuths."""
        from neuralsim.assets.catalog import PAPER_SIX
        from neuralsim.assets.preview import contact_sheet
        from neuralsim.assets.renderer import check_lighting

        check_lighting([lighting])
        if size <= 0:
            raise UserError(f"--size must be a positive number of pixels, got {size}.")
        expanded = [n for name in names for n in (PAPER_SIX if name == "paper" else [name])]
        typer.echo(str(contact_sheet(expanded, out, size=size, lighting=lighting)))

    @app.command("capture")
    def capture_cmd(
        obj: Annotated[str, typer.Argument(help="Built-in object name or a mesh file (.obj/.ply/.glb/.gltf/.stl).")],
        out: Annotated[Path, typer.Option(help="Output capture folder (images/ + transforms.json).")],
        views: Annotated[int, typer.Option(help="Number of views.")] = 100,
        size: Annotated[int, typer.Option(help="Image size in pixels.")] = 128,
        lighting: Annotated[str, typer.Option(help="Comma-separated lighting conditions; view i uses the (i mod n)-th.")] = "studio",
        elevation: Annotated[str, typer.Option(help="Elevation band in degrees, 'low,high'.")] = "-10,60",
        radius: Annotated[str, typer.Option(help="Camera distance band in object units, 'low,high' or one value.")] = "3.5,5",
        fov: Annotated[float, typer.Option(help="Horizontal field of view in degrees.")] = 40.0,
        spp: Annotated[int, typer.Option(help="Path-tracing samples per pixel.")] = 64,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
        overwrite: Annotated[bool, typer.Option(help="Replace an output folder that holds files.")] = False,
    ) -> None:
        """Render posed views of one object for fitting a radiance field."""
        from neuralsim.assets.capture import CaptureConfig, capture
        from neuralsim.runtime import resolve_device

        cfg = CaptureConfig(views=views, size=size, fov_deg=fov, elevation_deg=_pair(elevation, "--elevation"),
                            radius=_pair(radius, "--radius"), lighting=_csv(lighting), spp=spp, seed=seed)
        typer.echo(str(capture(obj, out, cfg, overwrite=overwrite, device=resolve_device(device).type)))

    @app.command("scenes")
    def scenes_cmd(
        objects_: Annotated[list[str], typer.Argument(metavar="OBJECTS", help="Object names or mesh paths; 'paper' for the paper's six.")],
        out: Annotated[Path, typer.Option(help="Output COCO folder (images/ + annotations.json).")],
        n: Annotated[int, typer.Option("--n", help="Number of images.")] = 100,
        size: Annotated[int, typer.Option(help="Image size in pixels.")] = 128,
        distribution: Annotated[Path | None, typer.Option(help="JSON file of per-object bin distributions (or a ψ file).")] = None,
        per_image: Annotated[str, typer.Option(help="Objects per image, 'min,max' or one number.")] = "1",
        backgrounds: Annotated[Path | None, typer.Option(help="Folder of background photos (default: procedural).")] = None,
        name: Annotated[str, typer.Option(help="Set name (val, test, …); part of the seed.")] = "scenes",
        spp: Annotated[int, typer.Option(help="Path-tracing samples per pixel.")] = 32,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
        overwrite: Annotated[bool, typer.Option(help="Replace an output folder that holds files.")] = False,
    ) -> None:
        """Render a labelled target-domain image set (COCO) with the ground-truth renderer."""
        from neuralsim.assets.catalog import PAPER_SIX
        from neuralsim.assets.scenes import SceneSetConfig, load_distributions, make_scene_set
        from neuralsim.runtime import resolve_device

        names = [o for name_ in objects_ for o in (PAPER_SIX if name_ == "paper" else [name_])]
        cfg = SceneSetConfig(objects=names, images=n, size=size, objects_per_image=_pair(per_image, "--per-image", int),
                             distributions=load_distributions(distribution) if distribution else {}, spp=spp,
                             backgrounds=str(backgrounds) if backgrounds else None, name=name, seed=seed)
        typer.echo(str(make_scene_set(cfg, out, overwrite=overwrite, device=resolve_device(device).type)))
