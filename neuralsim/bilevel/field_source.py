"""Training images from radiance fields for ψ samples: each sample is one object placed in the image (shift and
background from its replayable placement noise) and, when images hold several objects, others drawn from ψ beside
it, composited by depth over a background, each boxed by its visible alpha. Gives the `Render` of pass 1 and the
patch-wise `RenderVJP` of pass 2 (Tools 2 and 3), which can carry the boxes' cotangents too.

A sample's own object carries ψ's gradient; the others in its image are drawn from ψ as it stands (no gradient
flows through them) with a seed taken from the sample's own noise, so that pass 2 and the probes of `influence`
see the same image as pass 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from neuralsim.color import linear_to_srgb
from neuralsim.data.backgrounds import background_source
from neuralsim.errors import UserError
from neuralsim.fields.base import Field
from neuralsim.render import (
    Placement,
    RenderOutput,
    composite,
    labels_from_alpha,
    render_scene,
    scene_vjp,
    subpixel_box,
)
from neuralsim.runtime import derive_seed
from neuralsim.sampling.psi import Psi, RenderParams


@dataclass
class SourceConfig:
    """How ψ samples become labelled training images."""

    size: int | None = None
    """Image width and height in pixels; None in an optimize config: the validation images' size."""
    fov_deg: float = 40.0
    """Horizontal field of view in degrees (the target domain's camera)."""
    max_shift: float = 0.15
    """Largest move of the object's centre from the image centre, as a fraction of the image width."""
    objects_per_image: int = 1
    """Most objects in one image: each shows its own object and 0 to this many − 1 others (distinct objects)."""
    others_shift: float = 0.3
    """Largest move of the other objects' centres from the image centre, as a fraction of the image width."""
    min_visibility: float = 0.25
    """An object of which less than this fraction is visible (the rest hidden by objects in front) gets no box."""
    backgrounds: int = 64
    """Size of the bank of seeded backgrounds."""
    background_photos: str | None = None
    """A folder of photos whose random crops are the backgrounds; None: procedural backgrounds."""
    box_threshold: float = 0.5
    """Alpha above which a pixel is part of the object's box."""
    min_box_pixels: int = 9
    """Specks smaller than this are ignored."""
    patch_rays: int = 1024
    """Rays per patch in the patch-wise backward (Tool 3)."""
    seed: int = 0

    def __post_init__(self):
        if self.objects_per_image < 1:
            raise UserError(f"source.objects_per_image must be at least 1, got {self.objects_per_image}.")
        if not 0.0 <= self.min_visibility <= 1.0:
            raise UserError(f"source.min_visibility is a fraction in [0, 1], got {self.min_visibility}.")


@dataclass
class SampleLabels:
    """The labelled objects of one image, its own object first when it is boxed."""

    objects: list[str]
    boxes: list[np.ndarray]  # (4,) xyxy pixels each
    masks: list[np.ndarray]  # (H, W) bool visible pixels
    visibility: list[float]  # visible pixels over the pixels the object covers alone
    own: bool  # the sample's own object is among them (then at index 0)


class FieldSource:
    """`render(obj, params) → (images (n, 3, H, W) RGB [0, 1], targets)` and its patch-wise VJP.

    Each target holds "boxes" (n_j, 4) xyxy, "labels" (n_j,), "own" (n_j,) bool marking the sample's own object
    (whose box moves with its render parameters) and "visibility" (n_j,). `others` is the ψ that the other objects of
    an image are drawn from (needed when `objects_per_image` > 1; it is read as it stands at each render)."""

    def __init__(self, fields: dict[str, Field], category_names: list[str], lighting: list[str], config: SourceConfig,
                 others: Psi | None = None):
        missing = [c for c in category_names if c not in fields]
        if missing:
            raise UserError(f"No radiance field was given for object(s) {missing} of the validation set.")
        if config.objects_per_image > 1 and others is None:
            raise ValueError("objects_per_image > 1 needs the ψ that the other objects are drawn from")
        self.fields, self.config, self.others, self.lighting = fields, config, others, list(lighting)
        self.label_of = {name: k for k, name in enumerate(category_names)}  # model labels are 0-based
        self.anchor_index = {}
        for obj, field in fields.items():
            names = field.appearance.names
            unknown = [n for n in lighting if n not in names]
            if unknown:
                raise UserError(f"The field of {obj} has no lighting condition(s) {unknown}; it knows {names}.")
            self.anchor_index[obj] = torch.tensor([names.index(n) for n in lighting], device=_device_of(field))
        rng = np.random.default_rng(derive_seed(config.seed, "backgrounds"))
        draw = background_source(config.background_photos)
        bank = [linear_to_srgb(draw(rng, config.size, config.size)) for _ in range(config.backgrounds)]
        self.backgrounds = torch.from_numpy(np.stack(bank))  # (B, H, W, 3) sRGB in [0, 1]
        self.tan_half = math.tan(math.radians(config.fov_deg) / 2)

    def _place(self, obj: str, az: Tensor, el: Tensor, r: Tensor, light: Tensor, shift_uv: Tensor,
               max_shift: float) -> Placement:
        """`obj` at a pose, its lighting weights over the field's anchors, moved by shift_uv (2,) in [-1, 1] times
        `max_shift` of the image width: a fixed fraction of the view's width at the object's distance, so that the
        object keeps its place as the radius changes (the render's radius derivative includes that)."""
        field = self.fields[obj]
        weights = light.new_zeros(field.appearance.num_appearances).index_add(0, self.anchor_index[obj], light)
        shift = shift_uv * max_shift * 2 * self.tan_half * r * light.new_tensor([1.0, -1.0])  # image y grows down
        return Placement(field, az, el, r, weights, shift)

    def _scene(self, obj: str, params: RenderParams, j: int,
               tensors: list[Tensor] | None = None) -> tuple[list[Placement], list[str], Tensor]:
        """Sample j's placements (its own object first, then the others), their objects and its background, on the
        field's device and in its dtype (ψ's samples stay on the CPU; gradients flow back through `.to`)."""
        like = next(self.fields[obj].parameters())
        az, el, r, light = (t.to(like) for t in (tensors if tensors is not None else (t[j] for t in params.tensors())))
        u = params.placement[j]  # (3,) U(0, 1)
        own = self._place(obj, az, el, r, light, (u[:2].to(like) - 0.5) * 2, self.config.max_shift)
        background = self.backgrounds[int(u[2] * len(self.backgrounds)) % len(self.backgrounds)].to(like)
        placements, objects = [own], [obj]
        for other, drawn, shift_uv in self._others(obj, u):
            o_az, o_el, o_r, o_light = (t[0].to(like) for t in drawn.tensors())
            placements.append(self._place(other, o_az, o_el, o_r, o_light, shift_uv.to(like), self.config.others_shift))
            objects.append(other)
        return placements, objects, background

    @torch.no_grad()
    def _others(self, obj: str, u: Tensor) -> list[tuple[str, RenderParams, Tensor]]:
        """The other objects of the image whose own placement noise is u: how many, which, their render parameters
        drawn from ψ and their shifts, all from a seed of u."""
        pool = [o for o in self.label_of if o != obj]
        most = min(self.config.objects_per_image - 1, len(pool))
        if most == 0:
            return []
        rng = np.random.default_rng(derive_seed(self.config.seed, "others", *(float(x) for x in u)))
        chosen = [pool[i] for i in rng.permutation(len(pool))[: int(rng.integers(0, most + 1))]]
        out = []
        for other in chosen:
            psi = self.others.objects[other]
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            out.append((other, psi.discrete(psi.draw_noise(1, generator)), torch.from_numpy(rng.uniform(-1, 1, 2))))
        return out

    def render_sample(self, obj: str, params: RenderParams, j: int) -> tuple[Tensor, RenderOutput, list[str]]:
        """Sample j: the composited image (3, H, W) RGB in [0, 1] on the field's device and in its dtype, the scene's
        render (per-object alpha and coverage) and its objects; differentiable in `params` where gradients are
        enabled."""
        placements, objects, background = self._scene(obj, params, j)
        out = render_scene(placements, self.config.size, self.config.fov_deg)
        return composite(out.rgb, out.alpha, background).clamp(0, 1).permute(2, 0, 1), out, objects

    @torch.no_grad()
    def render_one(self, obj: str, params: RenderParams, j: int) -> tuple[Tensor, SampleLabels]:
        """Sample j without gradients: its image (3, H, W) on the CPU in float32, and its labels."""
        image, out, objects = self.render_sample(obj, params, j)
        return image.to("cpu", torch.float32), self.labels(out, objects)

    def scene_record(self, obj: str, params: RenderParams, j: int) -> list[dict]:
        """Sample j's objects (its own first) and their render parameters, as plain numbers."""
        lighting = lambda t: dict(zip(self.lighting, (float(w) for w in t)))  # noqa: E731
        own = {"object": obj, "azimuth_deg": float(params.azimuth_deg[j]), "elevation_deg": float(params.elevation_deg[j]),
               "radius": float(params.radius[j]), "lighting": lighting(params.lighting[j]),
               "bins": {f: int(b[j]) for f, b in params.bins.items()}}
        others = [{"object": other, "azimuth_deg": float(p.azimuth_deg[0]), "elevation_deg": float(p.elevation_deg[0]),
                   "radius": float(p.radius[0]), "lighting": lighting(p.lighting[0]),
                   "bins": {f: int(b[0]) for f, b in p.bins.items()}, "shift": [float(s) for s in shift]}
                  for other, p, shift in self._others(obj, params.placement[j])]
        return [own, *others]

    def labels(self, out: RenderOutput, objects: list[str]) -> SampleLabels:
        """Each object's mask and box from its visible alpha, those less visible than `min_visibility` left out."""
        cfg = self.config
        visible = labels_from_alpha(out.object_alpha, cfg.box_threshold, cfg.min_box_pixels)
        alone = labels_from_alpha(out.object_coverage, cfg.box_threshold, cfg.min_box_pixels)
        kept = SampleLabels([], [], [], [], own=False)
        for k, (obj, seen, whole) in enumerate(zip(objects, visible, alone)):
            fraction = float(seen.mask.sum()) / max(float(whole.mask.sum()), 1.0)
            if seen.box_xyxy is None or fraction < cfg.min_visibility:
                continue
            kept.own = kept.own or k == 0
            kept.objects.append(obj)
            kept.boxes.append(seen.box_xyxy)
            kept.masks.append(seen.mask)
            kept.visibility.append(min(fraction, 1.0))
        return kept

    def __call__(self, obj: str, params: RenderParams) -> tuple[Tensor, list[dict[str, Tensor]]]:
        """Images (n, 3, H, W) and targets; the own object's box is a `subpixel_box`: where gradients are enabled,
        images and that box are differentiable in `params` (`full_image_vjp` pulls cotangents of both back)."""
        images, targets = [], []
        for j in range(len(params)):
            image, out, objects = self.render_sample(obj, params, j)
            found = self.labels(out, objects)
            boxes = [torch.as_tensor(b, dtype=torch.float32) for b in found.boxes]
            if found.own:
                boxes[0] = subpixel_box(out.object_alpha[0], torch.as_tensor(found.boxes[0]),
                                        self.config.box_threshold).to("cpu", torch.float32)
            targets.append({
                "boxes": torch.stack(boxes) if boxes else torch.zeros(0, 4),
                "labels": torch.tensor([self.label_of[o] for o in found.objects], dtype=torch.int64),
                "own": torch.tensor([found.own and k == 0 for k in range(len(boxes))], dtype=torch.bool),
                "visibility": torch.tensor(found.visibility, dtype=torch.float32)})
            images.append(image.to("cpu", torch.float32))
        return torch.stack(images), targets

    def vjp(self, obj: str, params: RenderParams, upstream: Tensor,
            box_upstream: list[Tensor] | None = None, targets: list[dict[str, Tensor]] | None = None) -> RenderParams:
        """∂(Σ_j ⟨image_j, upstream_j⟩ + ⟨own box_j, its box_upstream⟩)/∂(azimuth, elevation, radius, lighting) of
        each sample j, patch by patch (Tool 3, `scene_vjp`); the other objects of an image are held where they are.

        upstream (n, 3, H, W); box_upstream (optional), per sample the cotangent (n_j, 4) of its target boxes, of
        which the own object's row moves with its alpha through `subpixel_box`; targets (optional), per sample its
        targets from pass 1, which the replay reproduces exactly: without them the own box is found by rendering
        the whole image once more."""
        grads: list[list[Tensor]] = [[] for _ in RenderParams.CONTINUOUS]
        for j in range(len(params)):
            inputs = [t[j].detach().requires_grad_(True) for t in params.tensors()]
            placements, _, background = self._scene(obj, params, j, inputs)
            box, box_grad = None, None
            if box_upstream is not None and box_upstream[j].numel():
                own = self._targets(obj, params, j) if targets is None else targets[j]
                if bool(own["own"].any()):
                    row = int(own["own"].nonzero()[0, 0])
                    box, box_grad = own["boxes"][row].detach(), box_upstream[j][row]
            pulled = scene_vjp(placements, inputs, self.config.size, self.config.fov_deg, upstream[j].permute(1, 2, 0),
                               background=background, boxes=[box], box_grads=[box_grad],
                               box_threshold=self.config.box_threshold, patch_rays=self.config.patch_rays)
            for store, g in zip(grads, pulled):
                store.append(g)
        return params.with_tensors(torch.stack(g) for g in grads)

    @torch.no_grad()
    def _targets(self, obj: str, params: RenderParams, j: int) -> dict[str, Tensor]:
        """Sample j's targets, found from its render."""
        return self(obj, params.select(slice(j, j + 1)))[1][0]


def _device_of(field: Field) -> torch.device:
    return next(field.parameters()).device


def load_fields(paths: dict[str, str | Path], device: str | torch.device = "cpu") -> dict[str, Field]:
    from neuralsim.fields.checkpoint import load_field

    return {obj: load_field(path, device) for obj, path in paths.items()}
