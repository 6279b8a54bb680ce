"""Render gradients against finite differences (float64, exact quadrature), and determinism."""

from __future__ import annotations

import pytest
import torch

from neuralsim.render import RenderConfig, render

EXACT = RenderConfig(min_transmittance=0.0, min_alpha=0.0, min_weight=0.0)
SIZE, FOV_DEG = 10, 35.0


def _loss(field, azimuth, elevation, radius, weights):
    out = render(field, azimuth, elevation, radius, weights, SIZE, FOV_DEG, config=EXACT)
    g = torch.Generator().manual_seed(3)
    w_rgb = torch.rand(SIZE, SIZE, 3, generator=g, dtype=torch.float64)
    w_alpha = torch.rand(SIZE, SIZE, generator=g, dtype=torch.float64)
    return (out.rgb * w_rgb).sum() + (out.alpha * w_alpha).sum() + 0.1 * (out.depth * out.alpha).sum()


def _inputs():
    return [torch.tensor(v, dtype=torch.float64) for v in (35.0, 20.0, 3.0)] + [torch.tensor([0.3, 0.7], dtype=torch.float64)]


def test_pose_and_appearance_gradients_match_finite_differences(field64):
    inputs = [x.requires_grad_(True) for x in _inputs()]
    _loss(field64, *inputs).backward()
    steps = {0: 1e-3, 1: 1e-3, 2: 1e-4, 3: 1e-4}  # degrees, degrees, object units, weight
    for i, h in steps.items():
        for j in range(inputs[i].numel()):
            plus, minus = _inputs(), _inputs()
            plus[i].view(-1)[j] += h
            minus[i].view(-1)[j] -= h
            numeric = (_loss(field64, *plus) - _loss(field64, *minus)).item() / (2 * h)
            analytic = inputs[i].grad.view(-1)[j].item()
            assert analytic == pytest.approx(numeric, rel=2e-3, abs=1e-6), (i, j, analytic, numeric)
            assert abs(numeric) > 1e-3  # the check is not vacuous


def test_render_is_deterministic_with_and_without_grad(field32):
    azimuth = torch.tensor(10.0, requires_grad=True)
    with torch.no_grad():
        first = render(field32, azimuth, 15.0, 3.5, 1, 16, 40.0)
    second = render(field32, azimuth, 15.0, 3.5, 1, 16, 40.0)
    assert second.rgb.requires_grad
    assert torch.equal(first.rgb, second.rgb.detach()) and torch.equal(first.alpha, second.alpha.detach())
    assert first.rgb.shape == (16, 16, 3) and first.alpha.shape == (16, 16) and first.object_alpha.shape == (1, 16, 16)


def test_generator_jitters_samples_reproducibly(field32):
    plain = render(field32, 10.0, 15.0, 3.5, 0, 12, 40.0).rgb
    jittered = [render(field32, 10.0, 15.0, 3.5, 0, 12, 40.0, generator=torch.Generator().manual_seed(7)).rgb
                for _ in range(2)]
    assert torch.equal(jittered[0], jittered[1]) and not torch.equal(plain, jittered[0])


def test_pixel_subset_matches_full_image(field32):
    full = render(field32, 50.0, 5.0, 3.2, 0, 12, 40.0)
    rays = torch.tensor([0, 5, 66, 70, 143])
    part = render(field32, 50.0, 5.0, 3.2, 0, 12, 40.0, rays=rays)
    torch.testing.assert_close(part.rgb, full.rgb.reshape(-1, 3)[rays])
    torch.testing.assert_close(part.depth, full.depth.reshape(-1)[rays])


def test_whole_images_render_a_chunk_of_rays_at_a_time(field32):
    whole = render(field32, 50.0, 5.0, 3.2, 0, 12, 40.0)
    with torch.no_grad():
        chunked = render(field32, 50.0, 5.0, 3.2, 0, 12, 40.0, config=RenderConfig(chunk_rays=50))  # 144 rays: 3 chunks
        subset = render(field32, 50.0, 5.0, 3.2, 0, 12, 40.0, rays=torch.arange(70, 144), config=RenderConfig(chunk_rays=30))
    assert chunked.rgb.shape == (12, 12, 3) and chunked.object_alpha.shape == (1, 12, 12)
    for name in ("rgb", "alpha", "depth", "object_alpha"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name).detach())
    torch.testing.assert_close(subset.rgb, whole.rgb.detach().reshape(-1, 3)[70:])
    assert whole.alpha.max() > 0.5


def test_culling_changes_pixels_only_negligibly(field32):
    exact = render(field32, 50.0, 5.0, 3.2, 0, 16, 40.0, config=EXACT)
    fast = render(field32, 50.0, 5.0, 3.2, 0, 16, 40.0)
    assert (exact.rgb - fast.rgb).abs().max() < 2e-3
    assert (exact.alpha - fast.alpha).abs().max() < 2e-3
    assert exact.alpha.max() > 0.5  # the blob is visible


def test_appearance_must_match_the_anchors(field32):
    with pytest.raises(ValueError, match="shape"):
        render(field32, 0.0, 0.0, 3.0, torch.ones(3) / 3, 8, 40.0)
    with pytest.raises(ValueError, match="not one of"):
        render(field32, 0.0, 0.0, 3.0, 2, 8, 40.0)


def test_pose_gradient_sees_the_occupancy_boundary(make_field):
    """Fog everywhere, occupancy a ball: samples are skipped outside it. The density fades to zero over the
    cells around the occupied ones, so skipping loses nothing and the radius derivative of the rendered
    opacity matches finite differences (a hard cut would drop fog in steps no gradient sees)."""
    from neuralsim.fields.occupancy import cell_centres

    field = make_field(torch.float64)
    with torch.no_grad():
        field.density_grid.fill_(-2.0)  # uniform fog
        centres = cell_centres(field.config.occupancy_resolution, dtype=torch.float64)
        field.occupancy.copy_(centres.norm(dim=-1) < 0.6)

    def opacity(radius):
        return render(field, torch.tensor(35.0, dtype=torch.float64), torch.tensor(20.0, dtype=torch.float64), radius,
                      0, SIZE, FOV_DEG, config=EXACT).alpha.sum()

    r = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    (analytic,) = torch.autograd.grad(opacity(r), r)
    h = 1e-2
    numeric = (opacity(torch.tensor(3.0 + h, dtype=torch.float64)) - opacity(torch.tensor(3.0 - h, dtype=torch.float64))) / (2 * h)
    assert abs(float(numeric)) > 1e-2
    assert float(analytic) == pytest.approx(float(numeric), rel=0.05)


def test_render_is_continuous_in_the_pose_where_density_reaches_the_box_faces(make_field):
    """A field dense up to the faces of its box (objects touch them): the change of Σ alpha over an elevation range
    equals the integral of its autograd derivative. Samples dropped whole at a face made the render jump (the
    change was 5× the integral) where no pose gradient sees it."""
    import numpy as np

    field = make_field(torch.float64)
    with torch.no_grad():
        field.density_grid.fill_(-2.0)
    elevations = np.linspace(20.0, 21.0, 41)
    values, slopes = [], []
    for e in elevations:
        elevation = torch.tensor(e, dtype=torch.float64, requires_grad=True)
        total = render(field, 30.0, elevation, 3.5, 0, 16, 40.0, config=EXACT).alpha.sum()
        values.append(total.item())
        slopes.append(torch.autograd.grad(total, elevation)[0].item())
    change, integral = values[-1] - values[0], np.trapezoid(slopes, elevations)
    assert abs(change) > 1e-4  # the range moves the render
    assert integral == pytest.approx(change, rel=0.05)
    assert max(abs(np.diff(values))) < 3 * max(abs(s) for s in slopes) * (elevations[1] - elevations[0])  # no jump
