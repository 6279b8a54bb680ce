"""Second-order terms of the detection loss against finite differences (float64, tiny detector)."""

import pytest
import torch

from neuralsim.errors import UserError
from neuralsim.tasks.data import TensorDetectionData
from neuralsim.tasks.second_order import (
    detection_loss,
    dot,
    hvp,
    loss_grad,
    mixed_term,
    mixed_term_with_boxes,
    per_image_grad_dot,
    select_params,
    validation_gradient,
)


@pytest.fixture(scope="module")
def setup(make_detector, make_batch):
    model = make_detector(seed=1, head_activation="silu").double()
    images, targets = make_batch(torch.float64)
    return model, images, targets


def _random_like(params, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in params.items()}


def _rel(a, b):
    return float(torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a)) / torch.sqrt(sum((b[k] ** 2).sum() for k in b)))


@pytest.mark.parametrize("group", ["heads", "heads+fpn"])
def test_hvp_matches_finite_difference_of_gradient(setup, group):
    model, images, targets = setup
    params = select_params(model, group)
    v = _random_like(params, 3)
    eps = 1e-6
    plus = loss_grad(model, {k: p + eps * v[k] for k, p in params.items()}, images, targets)
    minus = loss_grad(model, {k: p - eps * v[k] for k, p in params.items()}, images, targets)
    fd = {k: (plus[k] - minus[k]) / (2 * eps) for k in params}
    assert _rel(hvp(model, params, images, targets, v), fd) <= 1e-3


def test_mixed_term_matches_finite_difference_in_image_space(setup):
    model, images, targets = setup
    params = select_params(model, "heads")
    v = _random_like(params, 4)
    u = torch.randn(images.shape, generator=torch.Generator().manual_seed(5), dtype=images.dtype)
    e = mixed_term(model, params, images, targets, v)
    assert e.shape == images.shape
    # s(x) = Σ_j ∇θ l(x_j)·v; a tiny step, since ReLU/max-pool in the backbone make s piecewise smooth
    eps = 1e-7
    s = lambda x: dot(loss_grad(model, params, x, targets), v)  # noqa: E731
    fd = (s(images + eps * u) - s(images - eps * u)) / (2 * eps)
    analytic = (e * u).sum()
    assert abs(float(analytic - fd)) <= 1e-3 * abs(float(fd))


@pytest.mark.parametrize("box_loss", ["smooth_l1", "giou"])
def test_box_term_matches_finite_difference_of_the_targets(make_detector, make_batch, box_loss):
    model = make_detector(seed=1, head_activation="silu", box_loss=box_loss).double()
    images, targets = make_batch(torch.float64)
    # off the pixel grid: integer boxes tie anchors for "best match", and any step breaks the tie
    g = torch.Generator().manual_seed(9)
    targets = [t | {"boxes": t["boxes"] + 0.4 * torch.rand(t["boxes"].shape, generator=g, dtype=torch.float64)}
               for t in targets]
    params = select_params(model, "heads")
    v = _random_like(params, 7)
    e, e_boxes = mixed_term_with_boxes(model, params, images, targets, v)
    assert torch.allclose(e, mixed_term(model, params, images, targets, v))
    u = [torch.randn(t["boxes"].shape, generator=g, dtype=torch.float64) for t in targets]
    # a step far too small to change which anchors match a box: only the regression targets move
    eps = 1e-5

    def s(sign):
        moved = [t | {"boxes": t["boxes"] + sign * eps * du} for t, du in zip(targets, u)]
        return dot(loss_grad(model, params, images, moved), v)

    fd = (s(1) - s(-1)) / (2 * eps)
    analytic = sum((eb * du).sum() for eb, du in zip(e_boxes, u))
    assert abs(float(fd)) > 1e-6
    assert abs(float(analytic - fd)) <= 1e-4 * abs(float(fd))


def test_box_term_vanishes_under_the_l1_box_loss(make_detector, make_batch):
    """∇θ of an L1 loss holds only the sign of each residual: piecewise constant in the boxes."""
    model = make_detector(seed=1, head_activation="silu", box_loss="l1").double()
    images, targets = make_batch(torch.float64)
    params = select_params(model, "heads")
    _, e_boxes = mixed_term_with_boxes(model, params, images, targets, _random_like(params, 7))
    assert model.config.box_loss == "l1"
    assert all(float(eb.abs().max()) == 0.0 for eb in e_boxes)


def test_mixed_term_of_an_image_does_not_depend_on_its_batch(setup):
    model, images, targets = setup
    params = select_params(model, "heads")
    v = _random_like(params, 6)
    both = mixed_term(model, params, images, targets, v)
    alone = mixed_term(model, params, images[1:], targets[1:], v)
    torch.testing.assert_close(both[1:], alone, rtol=1e-9, atol=1e-12)
    assert both[0].abs().sum() > 0


def test_per_image_grad_dot_matches_per_image_gradients(setup):
    model, images, targets = setup
    params = select_params(model, "heads+fpn")
    v = _random_like(params, 7)
    fast = per_image_grad_dot(model, params, images, targets, v)
    loop = torch.stack([dot(loss_grad(model, params, images[j : j + 1], targets[j : j + 1]), v) for j in range(2)])
    torch.testing.assert_close(fast, loop, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(fast.sum(), dot(loss_grad(model, params, images, targets), v))


def test_a_detector_stays_copyable_after_the_forward_mode_pass(setup):
    """LTS trains copies of the detector that the implicit estimators have just run on."""
    import copy

    model, images, targets = setup
    params = select_params(model, "heads")
    per_image_grad_dot(model, params, images, targets, _random_like(params, 8))
    twin = copy.deepcopy(model)
    assert all(torch.equal(a, b) for a, b in zip(twin.anchor_generator.cell_anchors, model.anchor_generator.cell_anchors))
    torch.testing.assert_close(detection_loss(twin, params, images, targets), detection_loss(model, params, images, targets))


def test_loss_is_twice_differentiable_in_images(setup):
    model, images, targets = setup
    params = select_params(model, "heads")
    x = images.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(detection_loss(model, params, x, targets), x, create_graph=True)
    (gxx,) = torch.autograd.grad(gx.pow(2).sum(), x)
    assert gx.abs().sum() > 0 and torch.isfinite(gxx).all() and gxx.abs().sum() > 0


def test_validation_gradient_is_the_mean_and_ignores_stale_grad(setup):
    model, images, targets = setup
    params = select_params(model, "heads")
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)  # a stale training gradient must not leak in
    model.train()
    data = TensorDetectionData(images, targets, ["a", "b"])
    val = validation_gradient(model, params, data, batch_size=1)
    full = loss_grad(model, params, images, targets)
    assert _rel(val, {k: g / 2 for k, g in full.items()}) < 1e-12
    assert model.training


def test_param_groups_select_by_name(make_detector):
    model = make_detector()
    heads = select_params(model, "heads")
    with_fpn = select_params(model, "heads+fpn")
    assert heads and all(n.startswith("head.") for n in heads)
    assert set(heads) < set(with_fpn) and any(n.startswith("backbone.fpn.") for n in with_fpn)
    assert set(select_params(model, r"bbox_reg\.")) == {"head.regression_head.bbox_reg.weight", "head.regression_head.bbox_reg.bias"}
    with pytest.raises(UserError, match="no_such_layer"):
        select_params(model, "no_such_layer")
    with pytest.raises(UserError, match="regular expression"):
        select_params(model, "head[")
