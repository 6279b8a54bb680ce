"""Procedural product textures: a `Design` painted onto a cylindrical wrap (u = turns around +z, v = height).

Colours in designs are sRGB; textures are returned in linear RGB, as the renderer expects.
"""

from __future__ import annotations

import hashlib

import numpy as np

from neuralsim.assets.catalog import Design, Panel
from neuralsim.color import srgb_to_linear


def _in_u_range(u: np.ndarray, u0: float, u1: float) -> np.ndarray:
    """u within [u0, u1) on the circle of turns (u1 < u0 wraps through 0)."""
    return (u - u0) % 1.0 < (u1 - u0) % 1.0


def _paint_panel(img: np.ndarray, u: np.ndarray, v: np.ndarray, panel: Panel) -> None:
    inside = _in_u_range(u, panel.u0, panel.u1) & (v >= panel.v0) & (v < panel.v1)
    img[inside] = panel.color
    # Local panel coordinates in [0, 1].
    pu = ((u - panel.u0) % 1.0) / ((panel.u1 - panel.u0) % 1.0)
    pv = (v - panel.v0) / (panel.v1 - panel.v0)
    if panel.logo is not None:
        logo = inside & (((pu - 0.5) / 0.32) ** 2 + ((pv - 0.68) / 0.2) ** 2 < 1.0)
        img[logo] = panel.logo
    if panel.print_color is not None:
        # Three lines of "print" under the logo, of different lengths.
        for row, length in zip((0.42, 0.3, 0.18), (0.8, 0.6, 0.7)):
            line = inside & (np.abs(pv - row) < 0.035) & (np.abs(pu - 0.5) < length / 2)
            img[line] = panel.print_color


def design_texture(design: Design, name: str, width: int = 512, height: int = 256) -> np.ndarray:
    """Linear-RGB texture (height, width, 3) of `design`; row 0 is the top of the object (v = 1)."""
    u = (np.arange(width) + 0.5) / width
    v = 1.0 - (np.arange(height) + 0.5) / height
    uu, vv = np.meshgrid(u, v)
    img = np.empty((height, width, 3), np.float32)
    img[:] = design.body
    for band in design.bands:
        img[(vv >= band.v0) & (vv < band.v1)] = band.color
    for panel in design.panels:
        _paint_panel(img, uu, vv, panel)
    # A faint, seeded print grain so surfaces are not perfectly flat colour.
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    grain = np.random.default_rng(seed).normal(0.0, 0.012, size=(height, width, 1)).astype(np.float32)
    return srgb_to_linear(np.clip(img + grain, 0.0, 1.0))
