"""Differentiable volume rendering of radiance fields: single objects, scenes with occlusion, patch-wise
backward, compositing and labels."""

from neuralsim.render.camera import Placement, RenderOutput, intrinsics_for, render, render_scene, render_view
from neuralsim.render.labels import ObjectLabel, composite, edge_pixels, labels_from_alpha, subpixel_box
from neuralsim.render.patchwise import backward_scene_patchwise, patchwise_vjp, scene_tensors
from neuralsim.render.volume import RenderConfig, render_rays

__all__ = ["Placement", "RenderConfig", "RenderOutput", "ObjectLabel", "backward_scene_patchwise", "composite",
           "edge_pixels", "intrinsics_for", "labels_from_alpha", "patchwise_vjp", "render", "render_rays", "render_scene", "subpixel_box",
           "render_view", "scene_tensors"]
