"""Patch-wise backward against the full-image gradient, several objects with occlusion, compositing, labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralsim.cameras import object_to_camera
from neuralsim.render import (
    Placement,
    backward_scene_patchwise,
    composite,
    labels_from_alpha,
    render,
    render_scene,
    scene_tensors,
)
from neuralsim.render.camera import placement_c2w

SIZE, FOV_DEG = 16, 40.0


def _scene(psi: torch.Tensor, field_a, field_b) -> list[Placement]:
    """Two objects whose pose and lighting depend on a small parameter vector ψ (as the sampler would)."""
    return [
        Placement(field_a, 30.0 + 10 * psi[0], 15.0 + psi[1], 3.2, torch.stack([1 - psi[2], psi[2]]), (-0.4, 0.0)),
        Placement(field_b, 200.0 - 5 * psi[0], 25.0, 4.0 + psi[1], 0, torch.stack([0.5 + psi[2], psi[2] * 0 + 0.1])),
    ]


def test_patchwise_gradient_equals_full_image_gradient(make_field):
    field_a, field_b = make_field(seed=0), make_field(seed=1)
    background = torch.rand(SIZE, SIZE, 3, generator=torch.Generator().manual_seed(1))
    grad_image = torch.randn(SIZE, SIZE, 3, generator=torch.Generator().manual_seed(2))

    psi_full = torch.tensor([0.1, -0.2, 0.3], requires_grad=True)
    out = render_scene(_scene(psi_full, field_a, field_b), SIZE, FOV_DEG)
    image = composite(out.rgb, out.alpha, background)
    (image * grad_image).sum().backward()

    psi_patch = torch.tensor([0.1, -0.2, 0.3], requires_grad=True)
    grads = backward_scene_patchwise(_scene(psi_patch, field_a, field_b), SIZE, FOV_DEG, grad_image,
                                     background=background, patch_rays=37)
    assert len(grads) == len(scene_tensors(_scene(psi_patch, field_a, field_b)))
    torch.testing.assert_close(psi_patch.grad, psi_full.grad, rtol=1e-4, atol=1e-6)
    assert psi_full.grad.abs().min() > 1e-4


def test_patchwise_sums_rather_than_averages(make_field):
    field = make_field()
    grad_image = torch.ones(SIZE, SIZE, 3)
    results = []
    for patch in (SIZE * SIZE, 20):
        azimuth = torch.tensor(40.0, requires_grad=True)
        backward_scene_patchwise([Placement(field, azimuth, 10.0, 3.5)], SIZE, FOV_DEG, grad_image, patch_rays=patch)
        results.append(azimuth.grad)
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-7)


def test_placement_inverts_object_to_camera(make_field):
    p = Placement(make_field(torch.float64), torch.tensor(70.0, dtype=torch.float64), 20.0, 4.5, 0, (0.3, -0.2))
    expected = torch.linalg.inv(object_to_camera(torch.tensor(70.0, dtype=torch.float64), torch.tensor(20.0, dtype=torch.float64),
                                                 torch.tensor(4.5, dtype=torch.float64), (0.3, -0.2)))
    torch.testing.assert_close(placement_c2w(p), expected)


def test_single_placement_scene_equals_render(make_field):
    field = make_field()
    a = render(field, 30.0, 20.0, 3.5, 1, SIZE, FOV_DEG)
    b = render_scene([Placement(field, 30.0, 20.0, 3.5, 1)], SIZE, FOV_DEG)
    assert torch.equal(a.rgb, b.rgb)


def test_near_object_occludes_far_object(make_field):
    near, far = make_field(seed=0), make_field(seed=1)
    alone = render(far, 0.0, 0.0, 6.0, 0, SIZE, FOV_DEG)
    both = render_scene([Placement(near, 0.0, 0.0, 3.0), Placement(far, 0.0, 0.0, 6.0)], SIZE, FOV_DEG)
    centre = (SIZE // 2, SIZE // 2)
    # In the centre the far object alone is clearly visible, but behind the near one it is mostly hidden.
    assert alone.alpha[centre] > 0.5
    assert both.object_alpha[1][centre] < 0.3 * alone.alpha[centre]
    assert both.object_alpha[0][centre] > 0.5
    torch.testing.assert_close(both.object_alpha.sum(0), both.alpha)
    # Swapping the order of the placements changes nothing: samples are merged by depth.
    swapped = render_scene([Placement(far, 0.0, 0.0, 6.0), Placement(near, 0.0, 0.0, 3.0)], SIZE, FOV_DEG)
    torch.testing.assert_close(swapped.rgb, both.rgb)
    assert torch.all(both.depth[both.alpha > 0.9] < 4.0)


def test_shift_moves_the_object_across_the_image(make_field):
    field = make_field()
    left = render_scene([Placement(field, 0.0, 0.0, 4.0, 0, (-0.8, 0.0))], SIZE, FOV_DEG)
    cols = torch.arange(SIZE, dtype=torch.float32)
    centre_col = (left.alpha.sum(0) * cols).sum() / left.alpha.sum()
    assert centre_col < SIZE / 2 - 2


def test_composite_is_premultiplied_over():
    rgb = torch.tensor([[0.2, 0.1, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])  # premultiplied
    alpha = torch.tensor([0.4, 0.0, 1.0])
    background = torch.tensor([[1.0, 0.0, 0.5]] * 3)
    expected = torch.tensor([[0.2 + 0.6, 0.1, 0.3], [1.0, 0.0, 0.5], [0.5, 0.5, 0.5]])
    torch.testing.assert_close(composite(rgb, alpha, background), expected)


def test_labels_from_alpha_ignore_floaters_and_threshold():
    alpha = torch.zeros(2, 10, 12)
    alpha[0, 2:5, 3:8] = 0.9
    alpha[0, 8, 10] = 1.0  # a one-pixel floater
    alpha[1, 1, 1] = 0.3  # below the threshold
    first, second = labels_from_alpha(alpha, threshold=0.5, min_pixels=2)
    np.testing.assert_array_equal(first.box_xyxy, [3, 2, 8, 5])
    assert first.mask.sum() == 15
    assert second.box_xyxy is None and not second.mask.any()


def test_render_scene_needs_a_placement():
    with pytest.raises(ValueError):
        render_scene([], SIZE, FOV_DEG)
