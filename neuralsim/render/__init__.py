"""Differentiable volume rendering of radiance fields: single objects, scenes with occlusion, patch-wise
backward, compositing and labels."""

from neuralsim.render.camera import (
    Placement,
    RadianceField,
    RenderOutput,
    intrinsics_for,
    render,
    render_scene,
    render_view,
)
from neuralsim.render.labels import ObjectLabel, composite, edge_pixels, labels_from_alpha, subpixel_box
from neuralsim.render.patchwise import scene_tensors, scene_vjp
from neuralsim.render.volume import RayFns, RenderConfig, render_rays

__all__ = ["ObjectLabel", "Placement", "RadianceField", "RayFns", "RenderConfig", "RenderOutput", "composite", "edge_pixels",
           "intrinsics_for", "labels_from_alpha", "render", "render_rays", "render_scene", "render_view", "scene_tensors",
           "scene_vjp", "subpixel_box"]
