"""Grid field: NeRF-W anchors, occupancy (skipping empty space does not change the image), visual hull,
checkpoints (round trip, other format version, damaged files)."""

from __future__ import annotations

import json

import pytest
import torch

from neuralsim.cameras import Intrinsics, spherical_to_c2w
from neuralsim.errors import UserError
from neuralsim.fields import FORMAT_VERSION, GridField, GridFieldConfig, load_field, save_field
from neuralsim.fields.grid import squared_gradient
from neuralsim.fields.occupancy import cell_centres, cell_index, cell_maxima, visual_hull
from neuralsim.render import RenderConfig, render

SMALL = GridFieldConfig(density_resolution=24, feature_resolution=12, feature_channels=4, appearance_dim=3,
                        hidden_width=16, occupancy_resolution=12)


def _ball_field(seed: int = 0) -> GridField:
    field = GridField(SMALL, torch.tensor([0, 1, 1, 2, 0]), 3, seed=seed, appearance_names=["a", "b", "c"])
    axis = torch.linspace(-1, 1, SMALL.density_resolution)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    with torch.no_grad():
        field.density_grid.copy_((12.0 - 60.0 * (x**2 + y**2 + z**2))[None, None])  # a ball of radius ≈ 0.45
    return field


def test_anchor_is_mean_embedding_of_its_images():
    field = _ball_field()
    with torch.no_grad():
        field.appearance.embeddings.copy_(torch.arange(15, dtype=torch.float32).reshape(5, 3))
    anchors = field.appearance.anchors()
    torch.testing.assert_close(anchors[0], torch.tensor([6.0, 7.0, 8.0]))  # images 0 and 4
    torch.testing.assert_close(anchors[1], torch.tensor([4.5, 5.5, 6.5]))  # images 1 and 2
    mixed = field.appearance.resolve(torch.tensor([0.25, 0.75, 0.0]))
    torch.testing.assert_close(mixed, 0.25 * anchors[0] + 0.75 * anchors[1])
    torch.testing.assert_close(field.appearance.resolve(2), anchors[2])


def test_spread_is_the_mean_squared_distance_from_each_condition_anchor():
    field = _ball_field()
    with torch.no_grad():
        field.appearance.embeddings.copy_(torch.arange(15, dtype=torch.float32).reshape(5, 3))
    # Condition 0 holds images 0 and 4 (anchor [6, 7, 8]: each 6 away per axis), condition 1 images 1 and 2
    # ([4.5, 5.5, 6.5]: 1.5 away), condition 2 image 3 alone (0 away): (2·108 + 2·6.75 + 0) / 5.
    assert field.appearance.spread().item() == pytest.approx((2 * 108 + 2 * 6.75) / 5)


def test_squared_gradient_of_a_linear_ramp_is_its_slope_squared():
    resolution, slope = 9, 3.0
    axis = torch.linspace(-1, 1, resolution)
    ramp = (slope * axis).reshape(1, 1, 1, 1, resolution).expand(1, 2, resolution, resolution, resolution)
    assert float(squared_gradient(ramp, 2.0 / (resolution - 1))) == pytest.approx(slope**2)


def test_squared_gradient_backward_matches_autograd_of_the_plain_differences():
    volume = torch.randn(1, 2, 5, 4, 6, dtype=torch.float64, requires_grad=True, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(lambda v: squared_gradient(v, 0.5), (volume,))
    reference = sum(volume.diff(dim=a).square().mean() for a in (2, 3, 4)) / 0.25
    torch.testing.assert_close(squared_gradient(volume, 0.5), reference)


def test_occupancy_skips_empty_space_without_changing_the_image():
    field = _ball_field()
    before = render(field, 20.0, 30.0, 3.5, 0, 16, 40.0)
    field.update_occupancy(min_alpha=1e-4)
    assert 0.02 < field.occupancy.float().mean() < 0.5
    centres = cell_centres(SMALL.occupancy_resolution).reshape(-1, 3)
    assert field.occupancy.reshape(-1)[cell_index(torch.zeros(1, 3), SMALL.occupancy_resolution)].item()
    # One step's α falls below 1e-4 at radius 0.52: a cell reaching inside it has its centre within 0.52 plus
    # half a cell diagonal (0.14), and growing by one cell adds a diagonal (0.29).
    assert not field.occupancy.reshape(-1)[centres.norm(dim=-1) > 0.96].any()
    after = render(field, 20.0, 30.0, 3.5, 0, 16, 40.0)
    assert (after.rgb - before.rgb).abs().max() < 1e-3
    assert before.alpha.max() > 0.9


def test_occupied_cells_follow_every_change_of_the_occupancy_grid():
    field = _ball_field()
    centres = cell_centres(SMALL.occupancy_resolution).reshape(-1, 3)
    assert field.occupied(centres).all()  # a new field: everything occupied
    field.update_occupancy(min_alpha=1e-4)  # a refresh in place
    refreshed = field.occupied(centres)
    assert refreshed.any() and not refreshed.all()
    assert refreshed.sum() > field.occupancy.sum()  # grown by the fade margin
    empty = _ball_field()
    with torch.no_grad():
        empty.occupancy.zero_()
    field.load_state_dict(empty.state_dict())  # a load
    assert not field.occupied(centres).any()
    assert float(field.density(centres).detach().max()) == 0.0  # the fade reads the same grid


def test_visual_hull_keeps_the_object_and_carves_the_rest():
    intrinsics = Intrinsics.from_fov(24, 24, 40.0)
    c2ws = torch.stack([spherical_to_c2w(az, el, 4.0) for az, el in [(0, 0), (90, 0), (0, 80), (45, 30)]])
    centre = torch.tensor([[12, 12]])
    pixels_v, pixels_u = torch.meshgrid(torch.arange(24) + 0.5, torch.arange(24) + 0.5, indexing="ij")
    disc = ((pixels_u - centre[0, 0]) ** 2 + (pixels_v - centre[0, 1]) ** 2 < 5.0**2).float()  # a sphere's silhouette
    hull = visual_hull(16, c2ws, intrinsics, disc.expand(4, 24, 24))
    centres = cell_centres(16).reshape(-1, 3)
    inside = hull.reshape(-1)
    assert inside[centres.norm(dim=-1) < 0.25].all()
    assert not inside[centres.norm(dim=-1) > 1.0].any()


def test_checkpoint_round_trip_renders_identically(tmp_path):
    field = _ball_field()
    save_field(field, tmp_path, meta={"object": "ball"})
    loaded = load_field(tmp_path)
    assert loaded.appearance.names == ["a", "b", "c"]
    assert not any(p.requires_grad for p in loaded.parameters())
    a = render(field, 10.0, 10.0, 3.0, torch.tensor([0.2, 0.3, 0.5]), 12, 40.0)
    b = render(loaded, 10.0, 10.0, 3.0, torch.tensor([0.2, 0.3, 0.5]), 12, 40.0)
    assert torch.equal(a.rgb, b.rgb)


def test_checkpoint_of_another_version_is_a_user_error(tmp_path):
    save_field(_ball_field(), tmp_path)
    info = json.loads((tmp_path / "field.json").read_text())
    info["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "field.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match="format version"):
        load_field(tmp_path)


def test_damaged_or_missing_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_field(tmp_path / "nothing")
    save_field(_ball_field(), tmp_path)
    (tmp_path / "field.safetensors").write_bytes(b"not tensors")
    with pytest.raises(UserError, match="do not match"):
        load_field(tmp_path)


def test_exact_render_config_matches_default_on_a_trained_like_field():
    field = _ball_field()
    exact = render(field, 0.0, 0.0, 3.0, 1, 12, 40.0, config=RenderConfig(min_transmittance=0.0, min_alpha=0.0, min_weight=0.0))
    fast = render(field, 0.0, 0.0, 3.0, 1, 12, 40.0)
    assert (exact.rgb - fast.rgb).abs().max() < 2e-3


def test_bounds_box_the_occupied_cells_and_drop_no_pixel(monkeypatch):
    field = _ball_field()
    torch.testing.assert_close(field.bounds(), torch.tensor([[-1.0] * 3, [1.0] * 3]))  # everything occupied
    field.update_occupancy(min_alpha=1e-2)  # α reaches 1e-2 at radius 0.44: cells to ±0.5, grown twice to ±0.83
    low, high = field.bounds()
    centres = cell_centres(SMALL.occupancy_resolution).reshape(-1, 3)
    inside = field.occupied(centres)
    assert (centres[inside] > low).all() and (centres[inside] < high).all()
    assert (high - low < 1.9).all()  # tighter than the object box (2)
    boxed = render(field, 20.0, 30.0, 3.5, 0, 16, 40.0)
    monkeypatch.setattr(field, "bounds", lambda: None)
    unboxed = render(field, 20.0, 30.0, 3.5, 0, 16, 40.0)
    assert boxed.alpha.max() > 0.9
    assert torch.equal(boxed.rgb, unboxed.rgb) and torch.equal(boxed.alpha, unboxed.alpha)
    monkeypatch.undo()
    with torch.no_grad():
        field.occupancy.zero_()
    assert render(field, 20.0, 30.0, 3.5, 0, 16, 40.0).alpha.max() == 0.0  # an empty box: no ray enters


def test_cell_maxima_is_the_exact_maximum_of_the_trilinear_density_over_each_cell():
    generator = torch.Generator().manual_seed(0)
    volume = torch.randn(7, 9, 11, generator=generator, dtype=torch.float64)
    resolution = 4
    peak = cell_maxima(volume, resolution)
    # Dense samples inside every cell never exceed it, and come within a hair of it.
    lin = torch.linspace(0.0, 1.0, 41, dtype=torch.float64)
    for k, j, i in [(0, 0, 0), (1, 2, 3), (3, 3, 3), (2, 0, 1)]:
        lo = torch.tensor([i, j, k], dtype=torch.float64) * (2.0 / resolution) - 1.0
        xs, ys, zs = (lo[a] + lin * (2.0 / resolution) for a in range(3))
        z, y, x = torch.meshgrid(zs, ys, xs, indexing="ij")
        points = torch.stack([x, y, z], dim=-1).reshape(1, 1, 1, -1, 3)
        samples = torch.nn.functional.grid_sample(volume[None, None], points, mode="bilinear", align_corners=True)
        assert samples.max() <= peak[k, j, i] + 1e-12
        assert samples.max() >= peak[k, j, i] - 0.05 * peak.abs().max()


def test_refresh_keeps_a_one_voxel_wall_between_the_probe_points():
    config = GridFieldConfig(density_resolution=49, feature_resolution=8, feature_channels=4, appearance_dim=3,
                             hidden_width=16, occupancy_resolution=6)
    field = GridField(config, torch.tensor([0]), 1)
    with torch.no_grad():
        field.density_grid.fill_(-30.0)
        field.density_grid[0, 0, :, :, 24] = 40.0  # the plane x = 0: a wall one voxel thick, on a cell face
        field.density_grid[0, 0, 5, 5, 5] = 40.0  # and one hot vertex near a cell's corner
    field.update_occupancy(min_alpha=1e-3)
    expected = torch.zeros(6, 6, 6, dtype=torch.bool)
    expected[:, :, 1:5] = True  # the two cell columns either side of the wall, grown by one cell
    expected[:2, :2, :2] = True  # the cell holding the hot vertex (x = y = z = −0.79), grown by one cell
    assert torch.equal(field.occupancy, expected)
