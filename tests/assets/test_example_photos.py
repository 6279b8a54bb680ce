"""Foreign-domain "photos": non-square scene sets, the camera step (noise, blur, JPEG), photographic backgrounds and
the example set with its target distribution."""

import hashlib
import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from neuralsim.assets.camera_effects import CameraEffects
from neuralsim.assets.scenes import SceneSetConfig, draw_placements, load_distributions
from neuralsim.color import linear_to_srgb, to_uint8
from neuralsim.data.backgrounds import FolderBackgrounds, PhotoBackgrounds, background_source
from neuralsim.errors import UserError


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python (a Mitsuba abort cannot take pytest down)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600)


def digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_camera_effects_are_seeded_and_change_pixels():
    rng = np.random.default_rng(0)
    image = np.clip(rng.uniform(0, 1, (30, 40, 3)), 0, 1).astype(np.float32)
    image[:, :20] = 0.2  # a flat half, where blur changes nothing and noise shows
    camera = CameraEffects(noise_std=0.02, blur_sigma_px=0.8, jpeg_quality=80)
    a = camera.encode(camera.apply(image, np.random.default_rng(7)))
    b = camera.encode(camera.apply(image, np.random.default_rng(7)))
    assert a == b and camera.suffix == ".jpg"
    assert camera.encode(camera.apply(image, np.random.default_rng(8))) != a
    with Image.open(io.BytesIO(a)) as im:
        assert im.format == "JPEG" and im.size == (40, 30)
    clean = to_uint8(linear_to_srgb(image))
    noisy = CameraEffects(noise_std=0.02).apply(image, np.random.default_rng(7))
    assert noisy[:, :20].std() > 1.0 and clean[:, :20].std() == 0  # noise on the flat half
    assert abs(float(noisy[:, :20].mean()) - float(clean[:, :20].mean())) < 2.0  # …around the clean value
    blurred = CameraEffects(blur_sigma_px=0.8).apply(image, np.random.default_rng(7))
    assert blurred[:, 22:].std() < 0.8 * clean[:, 22:].std()  # blur smooths the random half
    plain = CameraEffects()
    assert np.array_equal(plain.apply(image, np.random.default_rng(7)), clean) and plain.suffix == ".png"
    with Image.open(io.BytesIO(plain.encode(clean))) as im:
        assert im.format == "PNG" and np.array_equal(np.asarray(im), clean)
    for bad in (CameraEffects(jpeg_quality=0), CameraEffects(noise_std=-1.0), CameraEffects(blur_sigma_px=float("nan"))):
        with pytest.raises(UserError):
            bad.validate()


def test_photo_backgrounds_are_seeded_crops(tmp_path):
    source = background_source("photos")
    assert isinstance(source, PhotoBackgrounds)
    a = source(np.random.default_rng(3), 30, 40)
    assert a.shape == (30, 40, 3) and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, PhotoBackgrounds()(np.random.default_rng(3), 30, 40))
    others = [source(np.random.default_rng(s), 30, 40) for s in range(4, 8)]
    assert not any(np.array_equal(a, o) for o in others)
    assert source(np.random.default_rng(3), 17, 5).shape == (17, 5, 3)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "bg.png")
    assert isinstance(background_source(str(tmp_path)), FolderBackgrounds)  # a folder is still a folder


def test_non_square_placements_scale_only_the_vertical_shift():
    square = SceneSetConfig(objects=["025_mug", "011_banana"], images=20, size=40, objects_per_image=(1, 2),
                            max_shift=0.3)
    wide = SceneSetConfig(**{**square.__dict__, "height": 20})
    assert square.frame == (40, 40) and wide.frame == (40, 20)
    for i in range(20):
        for s, w in zip(draw_placements(square, i), draw_placements(wide, i), strict=True):
            assert (s.object, s.azimuth_deg, s.radius, s.shift_xy[0]) == (w.object, w.azimuth_deg, w.radius, w.shift_xy[0])
            assert w.shift_xy[1] == pytest.approx(s.shift_xy[1] * 0.5)
    assert draw_placements(SceneSetConfig(**{**square.__dict__, "height": 40}), 3) == draw_placements(square, 3)
    assert "height" not in square.record() and "camera" not in square.record()  # square sets record what they did
    with pytest.raises(UserError, match="height"):
        SceneSetConfig(objects=["025_mug"], height=0).validate()


@pytest.mark.slow
def test_non_square_photographed_set_hides_an_object_behind_another(tmp_path):
    # Both objects sit at the image centre (max_shift 0): the can 3.5 units away fills the middle of the frame, the
    # mug 10 units away would show as a small blob in the middle, but is behind the can, so it gets no box.
    r = run_python(f"""
        import json
        import numpy as np
        from pathlib import Path
        from neuralsim.assets.camera_effects import CameraEffects
        from neuralsim.assets.meshes import load_asset
        from neuralsim.assets.renderer import GroundTruthRenderer
        from neuralsim.assets.scenes import SceneSetConfig, make_scene_set, placement_c2w, draw_placements
        from neuralsim.cameras import Intrinsics
        from neuralsim.sampling.bins import FactorBins, LightingWeights, ObjectDistribution

        def at(radius):
            return ObjectDistribution({{"azimuth": FactorBins(0, 360, np.ones(8) / 8, True),
                                       "elevation": FactorBins(20, 21, np.ones(1)),
                                       "radius": FactorBins(radius, radius + 0.1, np.ones(1))}},
                                      LightingWeights(["studio"], np.ones(1)))
        cfg = SceneSetConfig(objects=["002_master_chef_can", "025_mug"], images=2, size=40, height=30,
                             objects_per_image=(2, 2), max_shift=0.0, spp=2, backgrounds="photos", name="hid",
                             distributions={{"002_master_chef_can": at(3.5), "025_mug": at(10.0)}},
                             camera=CameraEffects(noise_std=0.01, blur_sigma_px=0.8, jpeg_quality=80))
        make_scene_set(cfg, Path(r"{tmp_path / 'a'}"))
        make_scene_set(cfg, Path(r"{tmp_path / 'b'}"))
        mug = next(p for p in draw_placements(cfg, 0) if p.object == "025_mug")
        alone = GroundTruthRenderer(load_asset("025_mug"), Intrinsics.from_fov(40, 30, 40.0), spp=2, lighting=["studio"])
        print(json.dumps({{"mug_alone_pixels": int((alone.render(placement_c2w(mug), "studio", 0)[0][..., 3] > 0.5).sum())}}))
        """)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["mug_alone_pixels"] >= 20  # visible when alone
    coco = json.loads((tmp_path / "a" / "annotations.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["images/hid_00000.jpg", "images/hid_00001.jpg"]
    for im in coco["images"]:
        assert (im["width"], im["height"]) == (40, 30) and len(im["render"]) == 2
        with Image.open(tmp_path / "a" / im["file_name"]) as photo:
            assert photo.format == "JPEG" and photo.size == (40, 30)
    assert [a["category_id"] for a in coco["annotations"]] == [1, 1]  # the can in each image, never the mug
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 40 and y + h <= 30 and w > 10
        assert abs(x + w / 2 - 20) <= 2  # centred: the principal point of a 40×30 frame is (20, 15)
    assert coco["info"]["config"]["height"] == 30 and coco["info"]["config"]["camera"]["jpeg_quality"] == 80
    assert digest(tmp_path / "a") == digest(tmp_path / "b")  # noise, blur and JPEG are seeded


@pytest.mark.slow
def test_make_example_photos_writes_a_foreign_set_and_its_distribution(tmp_path):
    out = tmp_path / "photos"
    command = ["examples", "make-photos", str(out), "--photos", "2", "--width", "32", "--height", "24", "--spp", "1",
               "--device", "cpu"]
    code = f"""
        import neuralsim.cli as cli
        from neuralsim.examples_cli import register
        if not any(g.name == "examples" for g in cli.app.registered_groups):
            register(cli.app)
        cli.main({command!r})
        """
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    from neuralsim.examples import EXAMPLE_OBJECTS, target_distributions

    coco = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == EXAMPLE_OBJECTS
    assert len(coco["images"]) == 2 and coco["info"]["config"]["fov_deg"] == 36.0
    for im in coco["images"]:
        assert (im["width"], im["height"]) == (32, 24) and im["file_name"].endswith(".jpg")
        assert 2 <= len(im["render"]) <= 4
        for p in im["render"]:
            assert p["lighting"] == "warm_left" and p["elevation_deg"] >= 30 and p["radius"] < 10.0
    loaded = load_distributions(out / "target-distribution.json")
    expected = target_distributions()
    assert sorted(loaded) == sorted(EXAMPLE_OBJECTS)
    for name, dist in loaded.items():
        assert dist.to_json() == expected[name].to_json()
    assert sum(max(d.factors["azimuth"].probs) == 0.5 for d in loaded.values()) == 2  # two seen from one quarter
    r = run_python(code)  # the folder holds files now
    assert r.returncode == 2 and r.stderr.startswith("error: Output folder") and len(r.stderr.splitlines()) == 1
