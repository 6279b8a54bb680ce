"""Training images from radiance fields for ψ samples: each sample is one object placed in the image
(shift and background from its replayable placement noise), composited over a background, boxed by
its alpha. Gives the `Render` of pass 1 and the patch-wise `RenderVJP` of pass 2 (Tools 2 and 3), which
can carry the boxes' cotangents too."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from neuralsim.color import linear_to_srgb
from neuralsim.data.backgrounds import procedural_background
from neuralsim.errors import UserError
from neuralsim.fields.base import Field
from neuralsim.render import Placement, composite, labels_from_alpha, render_scene, scene_vjp, subpixel_box
from neuralsim.runtime import derive_seed
from neuralsim.sampling.psi import RenderParams


@dataclass
class SourceConfig:
    """How ψ samples become labelled training images."""

    size: int | None = None
    """Image width and height in pixels; None in an optimize config: the validation images' size."""
    fov_deg: float = 40.0
    """Horizontal field of view in degrees (the target domain's camera)."""
    max_shift: float = 0.15
    """Largest move of the object's centre from the image centre, as a fraction of the image width."""
    backgrounds: int = 64
    """Size of the bank of seeded procedural backgrounds."""
    box_threshold: float = 0.5
    """Alpha above which a pixel is part of the object's box."""
    min_box_pixels: int = 9
    """Specks smaller than this are ignored."""
    patch_rays: int = 1024
    """Rays per patch in the patch-wise backward (Tool 3)."""
    seed: int = 0


class FieldSource:
    """`render(obj, params) → (images (n, 3, H, W) RGB [0, 1], targets)` and its patch-wise VJP."""

    def __init__(self, fields: dict[str, Field], category_names: list[str], lighting: list[str], config: SourceConfig):
        missing = [c for c in category_names if c not in fields]
        if missing:
            raise UserError(f"No radiance field was given for object(s) {missing} of the validation set.")
        self.fields, self.config = fields, config
        self.label_of = {name: k for k, name in enumerate(category_names)}  # model labels are 0-based
        self.anchor_index = {}
        for obj, field in fields.items():
            names = field.appearance.names
            unknown = [n for n in lighting if n not in names]
            if unknown:
                raise UserError(f"The field of {obj} has no lighting condition(s) {unknown}; it knows {names}.")
            self.anchor_index[obj] = torch.tensor([names.index(n) for n in lighting], device=_device_of(field))
        rng = np.random.default_rng(derive_seed(config.seed, "backgrounds"))
        bank = [linear_to_srgb(procedural_background(rng, config.size, config.size)) for _ in range(config.backgrounds)]
        self.backgrounds = torch.from_numpy(np.stack(bank))  # (B, H, W, 3) sRGB in [0, 1]
        self.tan_half = math.tan(math.radians(config.fov_deg) / 2)

    def _placement(self, obj: str, params: RenderParams, j: int, tensors: list[Tensor] | None = None) -> tuple[Placement, Tensor]:
        """Sample j as a `Placement` (pose, lighting weights over the field's anchors, shift) and its background,
        on the field's device and in its dtype (ψ's samples stay on the CPU; gradients flow back through `.to`)."""
        field = self.fields[obj]
        like = next(field.parameters())
        az, el, r, light = (t.to(like) for t in (tensors if tensors is not None else (t[j] for t in params.tensors())))
        u = params.placement[j].to(like)  # (3,) U(0, 1)
        weights = like.new_zeros(field.appearance.num_appearances).index_add(
            0, self.anchor_index[obj], light)  # (K,) on the simplex
        # The shift is a fixed fraction of the view's width at the object's distance, so the object keeps its
        # place in the image as the radius changes; the render's radius derivative includes that.
        shift = (u[:2] - 0.5) * 2 * self.config.max_shift * 2 * self.tan_half * r
        shift = shift * like.new_tensor([1.0, -1.0])  # image y grows downwards
        background = self.backgrounds[int(u[2] * len(self.backgrounds)) % len(self.backgrounds)].to(like)
        return Placement(field, az, el, r, weights, shift), background

    def render_sample(self, obj: str, params: RenderParams, j: int) -> tuple[Tensor, Tensor]:
        """Sample j: the composited image (3, H, W) RGB in [0, 1] and the object's alpha (H, W), on the field's device
        and in its dtype; differentiable in `params` where gradients are enabled."""
        placement, background = self._placement(obj, params, j)
        out = render_scene([placement], self.config.size, self.config.fov_deg)
        return composite(out.rgb, out.alpha, background).clamp(0, 1).permute(2, 0, 1), out.object_alpha[0]

    @torch.no_grad()
    def render_one(self, obj: str, params: RenderParams, j: int) -> tuple[Tensor, Tensor]:
        """Sample j without gradients: its image (3, H, W) on the CPU in float32, and its alpha as `render_sample`."""
        image, alpha = self.render_sample(obj, params, j)
        return image.to("cpu", torch.float32), alpha

    def label(self, obj: str, alpha: Tensor):
        """The object's mask and xyxy box (None when nothing is visible) from its alpha."""
        return labels_from_alpha(alpha[None], self.config.box_threshold, self.config.min_box_pixels)[0]

    def __call__(self, obj: str, params: RenderParams) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """Images (n, 3, H, W) and targets whose boxes (n_j, 4) xyxy are `subpixel_box`es: where gradients are
        enabled, images and boxes are differentiable in `params` (`full_image_vjp` pulls cotangents of both back)."""
        images, targets = [], []
        for j in range(len(params)):
            image, alpha = self.render_sample(obj, params, j)
            box = self.label(obj, alpha).box_xyxy
            boxes = torch.zeros(0, 4) if box is None else subpixel_box(
                alpha, torch.as_tensor(box), self.config.box_threshold)[None].to("cpu", torch.float32)
            targets.append({"boxes": boxes, "labels": torch.full((len(boxes),), self.label_of[obj], dtype=torch.int64)})
            images.append(image.to("cpu", torch.float32))
        return torch.stack(images), targets

    def vjp(self, obj: str, params: RenderParams, upstream: Tensor,
            box_upstream: list[Tensor] | None = None, boxes: list[Tensor] | None = None) -> RenderParams:
        """∂(Σ_j ⟨image_j, upstream_j⟩ + ⟨boxes_j, box_upstream_j⟩)/∂(azimuth, elevation, radius, lighting) of each
        sample j, patch by patch (Tool 3, `scene_vjp`).

        upstream (n, 3, H, W); box_upstream (optional), per sample the cotangent (n_j, 4) of its target boxes, which
        move with the object's alpha through `subpixel_box`; boxes (optional), per sample its target boxes (n_j, 4)
        xyxy from pass 1, which the replay reproduces exactly: without them each box is found by rendering the
        whole image once more."""
        grads: list[list[Tensor]] = [[] for _ in RenderParams.CONTINUOUS]
        for j in range(len(params)):
            inputs = [t[j].detach().requires_grad_(True) for t in params.tensors()]
            placement, background = self._placement(obj, params, j, inputs)
            box_grad = None if box_upstream is None or box_upstream[j].numel() == 0 else box_upstream[j][0]
            box = None if box_grad is None else self._box(obj, params, j, None if boxes is None else boxes[j])
            pulled = scene_vjp([placement], inputs, self.config.size, self.config.fov_deg, upstream[j].permute(1, 2, 0),
                               background=background, boxes=[box], box_grads=[box_grad],
                               box_threshold=self.config.box_threshold, patch_rays=self.config.patch_rays)
            for store, g in zip(grads, pulled):
                store.append(g)
        return params.with_tensors(torch.stack(g) for g in grads)

    def _box(self, obj: str, params: RenderParams, j: int, given: Tensor | None) -> Tensor | None:
        """Sample j's box (4,) xyxy: `given` (1, 4) from pass 1, else found from its render (None: nothing visible)."""
        if given is not None:
            return given.reshape(4)
        found = self.label(obj, self.render_one(obj, params, j)[1]).box_xyxy
        return None if found is None else torch.as_tensor(found)


def _device_of(field: Field) -> torch.device:
    return next(field.parameters()).device


def load_fields(paths: dict[str, str | Path], device: str | torch.device = "cpu") -> dict[str, Field]:
    from neuralsim.fields.checkpoint import load_field

    return {obj: load_field(path, device) for obj, path in paths.items()}
