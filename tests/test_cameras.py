import math

import pytest
import torch

from neuralsim.cameras import (
    Intrinsics,
    c2w_to_spherical,
    camera_rays,
    is_rigid,
    object_to_camera,
    project,
    spherical_to_c2w,
)

POSES = [(0.0, 0.0, 4.0), (37.0, 20.0, 3.5), (181.0, -45.0, 6.0), (300.0, 80.0, 2.5), (359.0, 5.0, 10.0)]


@pytest.mark.parametrize("az,el,r", POSES)
def test_c2w_is_rigid_and_round_trips(az, el, r):
    c2w = spherical_to_c2w(torch.tensor(az, dtype=torch.float64), torch.tensor(el, dtype=torch.float64),
                           torch.tensor(r, dtype=torch.float64))
    rot = c2w[:3, :3]
    torch.testing.assert_close(rot.T @ rot, torch.eye(3, dtype=torch.float64))
    assert torch.linalg.det(rot).item() == pytest.approx(1.0)
    assert is_rigid(c2w)
    az2, el2, r2 = c2w_to_spherical(c2w)
    assert math.isclose(az2.item(), az % 360, abs_tol=1e-6) or math.isclose(abs(az2.item() - az), 360, abs_tol=1e-6)
    assert el2.item() == pytest.approx(el, abs=1e-6)
    assert r2.item() == pytest.approx(r)


def test_camera_looks_at_origin_with_z_up():
    # Azimuth 0, elevation 0: camera on +x looking down −x; its +y (up) is world +z, its +x (right) is world +y.
    c2w = spherical_to_c2w(0.0, 0.0, 4.0)
    torch.testing.assert_close(c2w[:3, 3], torch.tensor([4.0, 0.0, 0.0]))
    torch.testing.assert_close(c2w[:3, 2], torch.tensor([1.0, 0.0, 0.0]))  # camera +z points back, away from the origin
    torch.testing.assert_close(c2w[:3, 1], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(c2w[:3, 0], torch.tensor([0.0, 1.0, 0.0]))


@pytest.mark.parametrize("az,el,r", POSES)
def test_origin_projects_to_principal_point(az, el, r):
    K = Intrinsics.from_fov(64, 48, 40.0)
    uv = project(torch.zeros(1, 3), spherical_to_c2w(az, el, r), K)
    torch.testing.assert_close(uv, torch.tensor([[32.0, 24.0]]), atol=1e-3, rtol=0)


def test_rays_and_projection_agree():
    K = Intrinsics.from_fov(16, 16, 50.0)
    c2w = spherical_to_c2w(70.0, 30.0, 5.0)
    pixels = torch.tensor([[0.5, 0.5], [8.0, 8.0], [15.5, 3.5]])
    origins, dirs = camera_rays(c2w, K, pixels)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(3))
    points = origins + 2.0 * dirs
    torch.testing.assert_close(project(points, c2w, K), pixels, atol=1e-3, rtol=0)
    # The central ray passes through the origin.
    _, d = camera_rays(c2w, K, torch.tensor([[8.0, 8.0]]))
    torch.testing.assert_close(d[0], -c2w[:3, 3] / 5.0, atol=1e-5, rtol=0)


def test_intrinsics_from_fov():
    K = Intrinsics.from_fov(100, 100, 90.0)
    assert K.fx == pytest.approx(50.0) and K.cx == 50.0
    assert K.fov_x_deg == pytest.approx(90.0)
    assert K.scaled(50, 50).fx == pytest.approx(25.0)
    with pytest.raises(ValueError):
        Intrinsics.from_fov(0, 10, 40.0)


def test_pose_is_differentiable():
    az = torch.tensor(30.0, dtype=torch.float64, requires_grad=True)
    el = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    r = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, e, rr: spherical_to_c2w(a, e, rr), (az, el, r))


def test_object_to_camera_shift_moves_the_projection():
    K = Intrinsics.from_fov(64, 64, 40.0)
    o2c = object_to_camera(0.0, 0.0, 4.0, (0.5, 0.0))
    centre = o2c[:3, 3]  # the object's origin in camera space
    u = K.fx * centre[0] / -centre[2] + K.cx
    assert u.item() > K.cx  # moved right
    assert centre[2].item() == pytest.approx(-4.0)


def test_is_rigid_rejects_scaled_and_reflected():
    m = torch.eye(4)
    assert is_rigid(m)
    assert not is_rigid(torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0])))
    assert not is_rigid(torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0])))
    bad_row = torch.eye(4)
    bad_row[3, 0] = 1.0
    assert not is_rigid(bad_row)
