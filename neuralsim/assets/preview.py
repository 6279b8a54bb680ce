"""Contact sheets: each object seen from 8 azimuths (one row per object), for checking designs by eye."""

from __future__ import annotations

from pathlib import Path

from neuralsim.assets.capture import rgba_to_png
from neuralsim.assets.catalog import short_name
from neuralsim.assets.meshes import load_asset
from neuralsim.assets.renderer import GroundTruthRenderer
from neuralsim.cameras import Intrinsics, spherical_to_c2w
from neuralsim.runtime import atomic_write_bytes, progress


def contact_sheet(objects: list[str], out: str | Path, size: int = 96, azimuths: int = 8, elevation_deg: float = 20.0,
                  radius: float = 4.0, lighting: str = "studio", spp: int = 32, seed: int = 0) -> Path:
    """Write a PNG with one row per object and one column per azimuth (0°, 45°, …), labelled."""
    from PIL import Image, ImageDraw

    intrinsics = Intrinsics.from_fov(size, size, 40.0)
    label_w = 110
    sheet = Image.new("RGB", (label_w + azimuths * size, 16 + len(objects) * size), (235, 235, 235))
    draw = ImageDraw.Draw(sheet)
    for j in range(azimuths):
        draw.text((label_w + j * size + 4, 2), f"{j * 360 / azimuths:.0f}°", fill=(0, 0, 0))
    with progress() as bar:
        task = bar.add_task("preview", total=len(objects) * azimuths)
        for i, name in enumerate(objects):
            asset = load_asset(name)
            renderer = GroundTruthRenderer(asset, intrinsics, spp=spp, lighting=[lighting])
            draw.text((4, 16 + i * size + size // 2 - 6), short_name(asset.name)[:18], fill=(0, 0, 0))
            for j in range(azimuths):
                c2w = spherical_to_c2w(j * 360.0 / azimuths, elevation_deg, radius).double().numpy()
                rgba = rgba_to_png(renderer.render(c2w, lighting, seed)[0])
                tile = Image.new("RGB", (size, size), (235, 235, 235))
                tile.paste(Image.fromarray(rgba), mask=Image.fromarray(rgba[..., 3]))
                sheet.paste(tile, (label_w + j * size, 16 + i * size))
                bar.advance(task)
    import io

    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return atomic_write_bytes(out, buf.getvalue())
