"""Real Mitsuba renders at tiny sizes, run through the CLI in a subprocess."""

import hashlib

import numpy as np
import pytest
from PIL import Image

from neuralsim.data.transforms import load_capture

pytestmark = pytest.mark.slow  # end to end through the CLI or Mitsuba: `make test-fast` leaves them out


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_capture_real_render_and_determinism(cli, tmp_path):
    args = ["capture", "025_mug", "--views", "6", "--size", "16", "--spp", "8", "--lighting", "studio,warm_left"]
    r = cli(*args, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    cap = load_capture(tmp_path / "a")
    assert len(cap.frames) == 6 and cap.intrinsics.width == 16
    assert [f.appearance_id for f in cap.frames] == [0, 1, 0, 1, 0, 1]
    assert sorted(cap.splits["train"] + cap.splits["val"] + cap.splits["test"]) == list(range(6))
    assert cap.meta["renderer"] == "mitsuba:llvm_ad_rgb"
    rgba = cap.load_rgba(cap.frames[0])
    assert rgba[..., 3].max() == 1.0 and rgba[0, 0, 3] == 0.0  # object in the middle, clean empty corner
    red = rgba[..., 3] > 0.9
    assert red.sum() > 10 and (rgba[red, 0] > rgba[red, 2]).mean() > 0.8  # the mug is red
    assert cli(*args, "--out", tmp_path / "b").returncode == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert cli(*args[:-2], "--lighting", "studio", "--seed", "1", "--out", tmp_path / "c").returncode == 0
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_capture_of_a_user_mesh_uses_its_texture_with_v_flipped(cli, tmp_path):
    import trimesh

    # A unit quad facing +x whose texture is red at the top (v = 1) and blue at the bottom.
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:4] = [255, 0, 0]
    tex[4:] = [0, 0, 255]
    verts = np.array([[0, -1, -1], [0, 1, -1], [0, 1, 1], [0, -1, 1]], float)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    mesh = trimesh.Trimesh(verts, [[0, 1, 2], [0, 2, 3]], process=False,
                           visual=trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(tex)))
    mesh.export(tmp_path / "quad.obj")
    r = cli("capture", tmp_path / "quad.obj", "--views", "3", "--size", "24", "--spp", "8", "--elevation", "0,0",
            "--radius", "3.5", "--out", tmp_path / "cap")
    assert r.returncode == 0, r.stderr
    cap = load_capture(tmp_path / "cap")
    # Views at azimuths where the front (+x) face is visible.
    seen = 0
    for frame, view in zip(cap.frames, cap.meta["views"]):
        if np.cos(np.radians(view["azimuth_deg"])) < 0.5:
            continue
        rgba = cap.load_rgba(frame)
        top, bottom = rgba[6:10, 10:14], rgba[14:18, 10:14]
        assert top[..., 0].mean() > top[..., 2].mean() + 0.2, "top of the quad must show the red half (v = 1)"
        assert bottom[..., 2].mean() > bottom[..., 0].mean() + 0.2
        seen += 1
    assert seen >= 1


def test_bad_capture_inputs(cli, tmp_path):
    (tmp_path / "broken.obj").write_text("this is not a mesh\nv 1 2\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    cases = [
        (["capture", "999_unicorn", "--out", tmp_path / "o1"], "Unknown object"),
        (["capture", tmp_path / "broken.obj", "--size", "8", "--views", "3", "--out", tmp_path / "o2"], "broken.obj"),
        (["capture", "025_mug", "--size", "0", "--out", tmp_path / "o3"], "--size"),
        (["capture", "025_mug", "--size", "8", "--views", "3", "--out", tmp_path / "full"], "already holds files"),
        (["capture", "025_mug", "--lighting", "disco", "--out", tmp_path / "o4"], "Unknown lighting"),
    ]
    for args, message in cases:
        r = cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".o", "o"))] == []  # nothing half-written
    assert (tmp_path / "full" / "keep.txt").read_text() == "user data"
