"""The patch-wise VJP (Tool 3) against the full-image VJP and central differences, for a cotangent of the image, of
the boxes, and of both: in a two-object scene with occlusion (`scene_vjp`) and in the training source
(`FieldSource.vjp`, which the bilevel loop uses, against `full_image_vjp` of its own render), alone and with another
object in the image."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from neuralsim.bilevel.data import full_image_vjp
from neuralsim.bilevel.field_source import FieldSource, SourceConfig
from neuralsim.render import (
    Placement,
    RenderConfig,
    composite,
    labels_from_alpha,
    render_scene,
    scene_vjp,
    subpixel_box,
)
from neuralsim.render.labels import edge_shift
from neuralsim.sampling.init import PsiInit, init_psi
from neuralsim.sampling.psi import RenderParams

Tensor = torch.Tensor
SIZE, FOV_DEG = 20, 40.0
EXACT = RenderConfig(min_transmittance=0.0, min_alpha=0.0, min_weight=0.0)  # no sample skipping: smooth in ψ
STRETCH = (1.5, 1.0, 0.6)  # an ellipsoid: its boxes move as it turns
COTANGENTS = {"image": (True, False), "boxes": (False, True), "both": (True, True)}


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- scene_vjp


@pytest.fixture
def scene(make_field):
    """Two blobs whose pose, shift and lighting follow ψ (3,), the near one partly hiding the far one; a background,
    cotangents of the image (H, W, 3) and of both boxes (4,), and the hard boxes at ψ0."""
    near, far = make_field(torch.float64, seed=0, axes=STRETCH), make_field(torch.float64, seed=1, axes=STRETCH)

    def placements(psi: Tensor) -> list[Placement]:
        return [Placement(near, 30.0 + 10 * psi[0], 15.0 + psi[1], 4.2, torch.stack([1 - psi[2], psi[2]]),
                          torch.stack([-0.35 + 0.1 * psi[1], 0.1 * psi[0]])),
                Placement(far, 200.0 - 5 * psi[0], 25.0, 5.5 + psi[1], 0, torch.stack([0.4 + 0.2 * psi[2], -0.1 + 0.5 * psi[2]]))]

    psi0 = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    with torch.no_grad():
        alpha0 = render_scene(placements(psi0), SIZE, FOV_DEG, config=EXACT).object_alpha
    boxes = [torch.as_tensor(label.box_xyxy) for label in labels_from_alpha(alpha0)]
    background = torch.rand(SIZE, SIZE, 3, generator=_seeded(1), dtype=torch.float64)
    e = torch.randn(SIZE, SIZE, 3, generator=_seeded(2), dtype=torch.float64)
    e_boxes = list(torch.randn(2, 4, generator=_seeded(3), dtype=torch.float64))
    return placements, psi0, boxes, background, e, e_boxes


def _scene_objective(scene, psi: Tensor, image: bool, boxes: bool, box_value=subpixel_box) -> Tensor:
    """⟨image(ψ), e⟩ and/or Σ_o ⟨box_o(ψ), e_o⟩ of the whole image, box_o = box_value(alpha_o(ψ), box_o(ψ0))."""
    placements, _, hard, background, e, e_boxes = scene
    out = render_scene(placements(psi), SIZE, FOV_DEG, config=EXACT)
    total = (composite(out.rgb, out.alpha, background) * e).sum() if image else psi.new_zeros(())
    if boxes:
        total = total + sum((box_value(alpha, box) * e_box).sum() for alpha, box, e_box in zip(out.object_alpha, hard, e_boxes))
    return total


def _scene_vjp(scene, image: bool, boxes: bool) -> Tensor:
    placements, psi0, hard, background, e, e_boxes = scene
    psi = psi0.clone().requires_grad_(True)
    (grad,) = scene_vjp(placements(psi), [psi], SIZE, FOV_DEG, e if image else torch.zeros_like(e),
                        background=background, boxes=hard if boxes else [], box_grads=e_boxes, patch_rays=37,
                        config=EXACT)
    return grad


def test_scene_boxes_have_edges_that_move(scene):
    hard = scene[2]
    assert len(hard) == 2
    for box in hard:  # no edge on the image border: every edge of both boxes moves
        assert 0 < box[0] < box[2] < SIZE and 0 < box[1] < box[3] < SIZE


@pytest.mark.parametrize("cotangent", COTANGENTS)
def test_scene_vjp_equals_the_full_image_vjp(scene, cotangent):
    image, boxes = COTANGENTS[cotangent]
    psi = scene[1].clone().requires_grad_(True)
    (full,) = torch.autograd.grad(_scene_objective(scene, psi, image, boxes), psi)
    assert full.abs().min() > 1e-2
    torch.testing.assert_close(_scene_vjp(scene, image, boxes), full, rtol=1e-10, atol=1e-12)


def test_scene_vjp_agrees_with_central_differences(scene):
    """d/dψ_k of ⟨image, e⟩ + Σ_o ⟨edges_o, e_o⟩ (the boxes' edges at sub-pixel precision, `edge_shift`)."""
    psi0, h = scene[1], 1e-5
    with torch.no_grad():
        numeric = torch.stack([(_scene_objective(scene, psi0 + h * step, True, True, edge_shift)
                                - _scene_objective(scene, psi0 - h * step, True, True, edge_shift)) / (2 * h)
                               for step in torch.eye(3, dtype=torch.float64)])
    torch.testing.assert_close(_scene_vjp(scene, True, True), numeric, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------- FieldSource.vjp


@pytest.fixture(params=["alone", "with another"])
def source_case(make_field, request):
    """A training source of float64 blobs, two samples of "a" under two lighting conditions, alone or each with "b"
    beside it (drawn from ψ, partly hidden or hiding), and float32 cotangents (the images and boxes the source
    returns are float32: these cast to float64 exactly, so both VJPs see the same numbers)."""
    fields = {"a": make_field(torch.float64, axes=STRETCH), "b": make_field(torch.float64, seed=1, axes=STRETCH)}
    names = fields["a"].appearance.names
    two = request.param == "with another"
    others = init_psi(PsiInit(objects=["a", "b"], bins={"azimuth": 4, "elevation": 1, "radius": 1},
                              ranges={"azimuth": (0.0, 360.0), "elevation": (10.0, 30.0), "radius": (3.3, 3.8)},
                              lighting=list(names)))
    source = FieldSource(fields, ["a", "b"], names, SourceConfig(
        size=SIZE, fov_deg=35.0, max_shift=0.1, objects_per_image=2 if two else 1, others_shift=0.25,
        min_visibility=0.0, backgrounds=2, patch_rays=70), others)
    params = RenderParams(azimuth_deg=torch.tensor([35.0, 120.0], dtype=torch.float64),
                          elevation_deg=torch.tensor([20.0, 10.0], dtype=torch.float64),
                          radius=torch.tensor([3.3, 3.6], dtype=torch.float64),
                          lighting=torch.tensor([[0.3, 0.7], [0.8, 0.2]], dtype=torch.float64),
                          placement=torch.tensor([[0.3, 0.6, 0.1], [0.7, 0.6, 0.9]], dtype=torch.float64))
    _, targets = source("a", params)
    for t in targets:  # the own object is boxed first, and with another, "b" is in the image too
        assert t["own"].tolist() == [True] + [False] * (len(t["own"]) - 1)
        assert t["labels"].tolist() == ([0, 1] if two else [0])
    e = torch.randn(2, 3, SIZE, SIZE, generator=_seeded(4))
    e_boxes = [torch.randn(len(t["boxes"]), 4, generator=_seeded(5 + j)) for j, t in enumerate(targets)]
    return source, params, targets, e, e_boxes


def _source_vjps(case, image: bool, boxes: bool) -> tuple[RenderParams, RenderParams]:
    """(patch-wise, full-image) VJPs of the source for the chosen cotangents."""
    source, params, hard, e, e_boxes = case
    e = e if image else torch.zeros_like(e)
    e_boxes = e_boxes if boxes else None
    return source.vjp("a", params, e, e_boxes, hard), full_image_vjp(source)("a", params, e, e_boxes)


def test_source_boxes_have_edges_that_move(source_case):
    for target in source_case[2]:
        box = target["boxes"][0]  # the own object's
        assert 0 < box[0] < box[2] < SIZE and 0 < box[1] < box[3] < SIZE


@pytest.mark.parametrize("cotangent", COTANGENTS)
def test_field_source_vjp_equals_the_full_image_vjp(source_case, cotangent):
    image, boxes = COTANGENTS[cotangent]
    patched, full = _source_vjps(source_case, image, boxes)
    for name, p, f in zip(RenderParams.CONTINUOUS, patched.tensors(), full.tensors()):
        if image or name != "lighting":  # the lighting leaves alpha, and so the boxes, as they are
            assert f.abs().min() > 1e-4, name
        torch.testing.assert_close(p, f, rtol=1e-10, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_field_source_vjp_agrees_with_central_differences(source_case):
    """d/dp of ⟨image_j(p), e_j⟩ + ⟨edges_j(p), e_b_j⟩ for every continuous parameter p of every sample j."""
    source, params, hard, e, e_boxes = case = source_case
    patched, _ = _source_vjps(case, True, True)

    def objective(p: RenderParams, j: int) -> float:
        image, out, _ = source.render_sample("a", p, j)
        return float((image * e[j]).sum() + (edge_shift(out.object_alpha[0], hard[j]["boxes"][0]) * e_boxes[j][0]).sum())

    def moved(name: str, index: tuple[int, ...], step: float) -> RenderParams:
        value = getattr(params, name).clone()
        value[index] += step
        return dataclasses.replace(params, **{name: value})

    h = 1e-6
    for name, grad in zip(RenderParams.CONTINUOUS, patched.tensors()):
        numeric = torch.zeros_like(grad)
        for index in np.ndindex(*grad.shape):  # index[0]: the sample j
            numeric[index] = (objective(moved(name, index, h), index[0])
                              - objective(moved(name, index, -h), index[0])) / (2 * h)
        torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-8, msg=lambda m: f"{name}: {m}")
