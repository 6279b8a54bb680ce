"""The ground-truth renderer: Mitsuba 3 path tracing of one object under named lighting conditions.

Lights are fixed in the object's frame (the camera moves, as in a capture), the emitters are hidden so
alpha is clean, and every render is seeded. Output: premultiplied linear RGB, alpha, and depth.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

from neuralsim.assets.meshes import MeshAsset, MeshPart
from neuralsim.cameras import Intrinsics
from neuralsim.errors import UserError


@dataclass(frozen=True)
class Light:
    """A directional light: the direction it travels (object frame) and its linear RGB irradiance."""

    direction: tuple[float, float, float]
    irradiance: tuple[float, float, float]


@dataclass(frozen=True)
class Lighting:
    ambient: tuple[float, float, float]  # constant environment radiance, linear RGB
    lights: tuple[Light, ...]
    description: str


# "Left" and "right" are as seen from azimuth 0 (camera on +x looking at the object): left is −y.
LIGHTING: dict[str, Lighting] = {
    "studio": Lighting((0.55, 0.55, 0.55), (Light((-1.0, 0.3, -1.2), (1.4, 1.4, 1.4)),), "even white light, soft key from the front"),
    "warm_left": Lighting((0.08, 0.06, 0.04), (Light((0.2, 1.0, -0.35), (3.2, 2.2, 1.1)),), "warm key light from the left"),
    "cool_right": Lighting((0.04, 0.06, 0.09), (Light((0.2, -1.0, -0.35), (1.2, 2.0, 3.4)),), "cool key light from the right"),
    "dim_top": Lighting((0.05, 0.05, 0.05), (Light((0.0, 0.0, -1.0), (0.9, 0.9, 0.85)),), "dim light from straight above"),
    "low_light": Lighting((0.012, 0.012, 0.016), (Light((0.0, 0.0, 1.0), (0.8, 0.8, 0.9)),),
                          "a dark room lit faintly from below: seen from above, the object is nearly a silhouette"),
}


def lighting_names() -> list[str]:
    return list(LIGHTING)


def check_lighting(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in LIGHTING]
    if unknown or not names:
        raise UserError(f"Unknown lighting condition(s) {unknown}; choose from {', '.join(LIGHTING)}.")
    return names


def _find_libllvm() -> str | None:
    import glob

    for pattern in ("/usr/lib/*/libLLVM.so.2*", "/usr/lib/*/libLLVM-2*.so", "/usr/lib/*/libLLVM.so.19*", "/usr/lib/*/libLLVM-19.so"):
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[-1]
    return None


_VARIANT: str | None = None


def mitsuba(device: str = "cpu"):
    """Import Mitsuba with the best variant: cuda_ad_rgb on a GPU, llvm_ad_rgb, else scalar_rgb (warned)."""
    global _VARIANT
    if "DRJIT_LIBLLVM_PATH" not in os.environ and (lib := _find_libllvm()):
        os.environ["DRJIT_LIBLLVM_PATH"] = lib
    try:
        import mitsuba as mi
    except ImportError:
        raise UserError("Mitsuba 3 is not installed; run `make test` or `pip install mitsuba` to set it up.") from None
    if _VARIANT is None:
        wanted = ["cuda_ad_rgb"] if device.startswith("cuda") else []
        wanted += ["llvm_ad_rgb", "scalar_rgb"]
        for variant in wanted:
            try:
                mi.set_variant(variant)
                _VARIANT = variant
                break
            except (ImportError, AttributeError, RuntimeError):
                continue
        if _VARIANT == "scalar_rgb":
            warnings.warn("Mitsuba's LLVM backend is unavailable (install Debian's libllvm19); using the slow scalar_rgb variant.", stacklevel=2)
    return mi


def gl_to_mitsuba(c2w: np.ndarray) -> np.ndarray:
    """OpenGL camera-to-world (x right, z back) → Mitsuba's (x left, z forward)."""
    return np.asarray(c2w, np.float64) @ np.diag([-1.0, 1.0, -1.0, 1.0])


class GroundTruthRenderer:
    """Path-traces one object at a fixed image size; camera pose and lighting change per call."""

    def __init__(self, asset: MeshAsset, intrinsics: Intrinsics, spp: int = 64, lighting: list[str] | None = None,
                 device: str = "cpu", max_depth: int = 4):
        if intrinsics.width <= 0 or intrinsics.height <= 0:
            raise UserError(f"Image size must be positive, got {intrinsics.width}x{intrinsics.height}.")
        if spp <= 0:
            raise UserError(f"Samples per pixel must be positive, got {spp}.")
        self.mi = mi = mitsuba(device)
        self.asset, self.intrinsics, self.spp = asset, intrinsics, spp
        self.lighting = check_lighting(lighting or list(LIGHTING))
        scene: dict = {
            "type": "scene",
            "integrator": {"type": "aov", "aovs": "dd.y:depth", "image": {"type": "path", "max_depth": max_depth,
                                                                          "hide_emitters": True}},
            "sensor": {
                "type": "perspective", "fov": intrinsics.fov_x_deg, "fov_axis": "x", "near_clip": 0.01, "far_clip": 1000.0,
                "to_world": mi.ScalarTransform4f(np.eye(4)),
                "film": {"type": "hdrfilm", "width": intrinsics.width, "height": intrinsics.height,
                         "pixel_format": "rgba", "rfilter": {"type": "box"}},
                "sampler": {"type": "independent", "sample_count": spp},
            },
        }
        for i, part in enumerate(asset.parts):
            scene[f"part{i}"] = self._mesh(part, f"part{i}")
        scene["ambient"] = {"type": "constant", "radiance": {"type": "rgb", "value": [0.0, 0.0, 0.0]}}
        for name in self.lighting:
            cond = LIGHTING[name]
            for j, light in enumerate(cond.lights):
                scene[f"{name}_light{j}"] = {"type": "directional", "direction": list(light.direction),
                                             "irradiance": {"type": "rgb", "value": list(light.irradiance)}}
        self.scene = mi.load_dict(scene)
        self.params = mi.traverse(self.scene)
        self._light_values = {k: np.array(self.params[k]).reshape(-1)[:3] for k in self.params.keys()
                              if k.endswith("irradiance.value")}

    def _mesh(self, part: MeshPart, name: str):
        mi = self.mi
        props = mi.Properties()
        if part.texture is not None and part.uvs is not None:
            reflectance = {"type": "bitmap", "bitmap": mi.Bitmap(np.ascontiguousarray(part.texture, np.float32)),
                           "filter_type": "bilinear", "wrap_mode": "repeat"}
        elif part.vertex_colors is not None:
            reflectance = {"type": "mesh_attribute", "name": "vertex_color"}
        else:
            reflectance = {"type": "rgb", "value": list(part.color)}
        props["bsdf"] = mi.load_dict({"type": "roughplastic", "distribution": "ggx", "alpha": float(part.roughness),
                                      "diffuse_reflectance": reflectance, "int_ior": 1.5})
        has_uv = part.uvs is not None and part.texture is not None
        mesh = mi.Mesh(name, len(part.vertices), len(part.faces), props=props, has_vertex_normals=True,
                       has_vertex_texcoords=has_uv)
        params = mi.traverse(mesh)
        params["vertex_positions"] = mi.Float(part.vertices.astype(np.float32).ravel())
        params["faces"] = mi.UInt32(part.faces.astype(np.uint32).ravel())
        params["vertex_normals"] = mi.Float(part.normals.astype(np.float32).ravel())
        if has_uv:
            uv = part.uvs.astype(np.float32).copy()
            uv[:, 1] = 1.0 - uv[:, 1]  # Mitsuba's bitmap row 0 is v = 0
            params["vertex_texcoords"] = mi.Float(uv.ravel())
        params.update()
        if part.vertex_colors is not None and not has_uv:
            mesh.add_attribute("vertex_color", 3, mi.Float(part.vertex_colors.astype(np.float32).ravel()))
        return mesh

    def _set_lighting(self, condition: str) -> None:
        if condition not in self.lighting:
            raise UserError(f"Lighting {condition!r} is not one of this renderer's conditions {self.lighting}.")
        self.params["ambient.radiance.value"] = self.mi.Color3f(*map(float, LIGHTING[condition].ambient))
        for key, value in self._light_values.items():
            self.params[key] = self.mi.Color3f(*(value if key.startswith(f"{condition}_") else np.zeros(3)).tolist())

    def render(self, c2w: np.ndarray, lighting: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Render from OpenGL camera-to-world `c2w`. Returns premultiplied linear RGBA (H, W, 4) and depth
        (H, W; distance along the camera axis, 0 where nothing was hit)."""
        mi = self.mi
        self.params["sensor.to_world"] = mi.ScalarTransform4f(gl_to_mitsuba(c2w)) if "scalar" in mi.variant() else \
            mi.Transform4f(gl_to_mitsuba(c2w))
        self._set_lighting(lighting)
        self.params.update()
        out = np.array(mi.render(self.scene, seed=int(seed) % 2**32), dtype=np.float32)  # (H, W, 5)
        rgba = np.clip(out[..., :4], 0.0, None)
        rgba[..., 3] = np.clip(rgba[..., 3], 0.0, 1.0)
        alpha = rgba[..., 3]
        depth = np.where(alpha > 1e-4, out[..., 4] / np.maximum(alpha, 1e-4), 0.0).astype(np.float32)
        return rgba, depth
