"""Several objects with occlusion, the patch size of the patch-wise backward, compositing, labels (the patch-wise
backward against the full-image VJP: test_patchwise_vjp.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neuralsim.cameras import object_to_camera
from neuralsim.render import (
    Placement,
    composite,
    labels_from_alpha,
    render,
    render_scene,
    scene_vjp,
)
from neuralsim.render.camera import placement_c2w

SIZE, FOV_DEG = 16, 40.0


def test_patchwise_sums_rather_than_averages(make_field):
    field = make_field()
    grad_image = torch.ones(SIZE, SIZE, 3)
    azimuth = torch.tensor(40.0, requires_grad=True)
    whole, patched = (scene_vjp([Placement(field, azimuth, 10.0, 3.5)], [azimuth], SIZE, FOV_DEG, grad_image,
                                patch_rays=patch)[0] for patch in (SIZE * SIZE, 20))
    torch.testing.assert_close(patched, whole, rtol=1e-4, atol=1e-7)


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
