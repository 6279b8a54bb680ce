"""Boxes that move with the render: the sub-pixel box keeps the hard box's value, its edges follow the object,
and `FieldSource.vjp` pulls a box cotangent back to the camera as finite differences of the edges say."""

from __future__ import annotations

import pytest
import torch

from neuralsim.bilevel.field_source import FieldSource, SourceConfig
from neuralsim.render import labels_from_alpha, subpixel_box
from neuralsim.render.labels import edge_pixels, edge_shift
from neuralsim.sampling.psi import RenderParams

H = W = 32
Tensor = torch.Tensor


def disc(cx: Tensor, cy: float, radius: Tensor) -> Tensor:
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    return torch.sigmoid(radius - ((x - cx) ** 2 + (y - cy) ** 2).sqrt())


def _box(alpha: Tensor) -> Tensor:
    return torch.as_tensor(labels_from_alpha(alpha[None].detach())[0].box_xyxy)


def test_subpixel_box_keeps_the_hard_box_and_follows_the_object():
    cx = torch.tensor(15.3, dtype=torch.float64, requires_grad=True)
    radius = torch.tensor(7.2, dtype=torch.float64, requires_grad=True)
    alpha = disc(cx, 12.7, radius)
    hard = _box(alpha)
    box = subpixel_box(alpha, hard)
    assert torch.equal(box.detach(), hard)
    d_cx = torch.stack([torch.autograd.grad(box[k], cx, retain_graph=True)[0] for k in range(4)])
    d_r = torch.stack([torch.autograd.grad(box[k], radius, retain_graph=True)[0] for k in range(4)])
    # moving the disc right moves x1 and x2 by as much and leaves y alone; growing it pushes every edge out
    assert d_cx.tolist() == pytest.approx([1, 0, 1, 0], abs=0.15)
    assert d_r.tolist() == pytest.approx([-1, -1, 1, 1], abs=0.15)


def test_edges_on_the_image_border_do_not_move():
    cx = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    alpha = disc(cx, 16.0, torch.tensor(6.0, dtype=torch.float64))  # cut by the left border
    hard = _box(alpha)
    assert hard[0] == 0
    (grad,) = torch.autograd.grad(subpixel_box(alpha, hard)[0], cx, allow_unused=True)
    assert grad is None or float(grad) == 0.0


def test_edge_pixels_are_all_that_edge_shift_reads():
    cx = torch.tensor(14.6, dtype=torch.float64)
    alpha = disc(cx, 18.2, torch.tensor(6.3, dtype=torch.float64))
    box = _box(alpha)
    ids = edge_pixels(box, H, W)
    assert len(ids) < H * W / 4
    only = torch.zeros(H * W, dtype=torch.float64).index_put((ids,), alpha.reshape(-1)[ids]).reshape(H, W)
    torch.testing.assert_close(edge_shift(only, box), edge_shift(alpha, box), rtol=0, atol=0)
    rest = alpha.clone()
    rest.reshape(-1)[ids] = 0.0  # and without them the edges are lost
    assert not torch.equal(edge_shift(rest, box), edge_shift(alpha, box))


def test_field_source_pulls_box_cotangents_back_to_the_camera(make_field):
    field = make_field(torch.float64, radius=0.6)
    source = FieldSource({"a": field}, ["a"], [field.appearance.names[1]],
                         SourceConfig(size=H, fov_deg=35.0, max_shift=0.1, backgrounds=2, patch_rays=300))
    params = RenderParams(azimuth_deg=torch.tensor([35.0, 120.0], dtype=torch.float64),
                          elevation_deg=torch.tensor([20.0, 10.0], dtype=torch.float64),
                          radius=torch.tensor([3.0, 3.4], dtype=torch.float64),
                          lighting=torch.ones(2, 1, dtype=torch.float64),
                          placement=torch.tensor([[0.3, 0.6, 0.1], [0.7, 0.4, 0.9]], dtype=torch.float64))
    box_grad = [torch.tensor([[0.3, -0.5, 1.0, 0.7]], dtype=torch.float64)] * 2
    zero_image = torch.zeros(2, 3, H, H, dtype=torch.float64)
    vjp = source.vjp("a", params, zero_image, box_grad)
    _, targets = source("a", params)
    from_edges = source.vjp("a", params, zero_image, box_grad, targets)  # alpha on the edge rays only
    for whole, edge in zip(vjp.tensors(), from_edges.tensors()):
        torch.testing.assert_close(edge, whole, rtol=1e-9, atol=1e-12)

    def edges(p: RenderParams, j: int) -> Tensor:
        """⟨edge positions, box_grad⟩ of image j at the hard box of the unmoved render."""
        with torch.no_grad():
            alpha = source.render_sample("a", p, j)[1].object_alpha[0]
        return (edge_shift(alpha, torch.as_tensor(source.render_one("a", params, j)[1].boxes[0])) * box_grad[j][0]).sum()

    for name in ("radius", "azimuth_deg"):
        h = 1e-4 if name == "radius" else 1e-3  # small: the profile maximum switches rows
        for j in range(2):
            moved = {s: params.with_tensors(t + s * h * (torch.arange(2) == j) if n == name else t
                                            for n, t in zip(params.CONTINUOUS, params.tensors())) for s in (1, -1)}
            numeric = float(edges(moved[1], j) - edges(moved[-1], j)) / (2 * h)
            analytic = float(getattr(vjp, name)[j])
            assert abs(numeric) > 1e-3, (name, j)
            assert analytic == pytest.approx(numeric, rel=1e-3), (name, j)
