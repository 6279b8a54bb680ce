"""Target-domain scene sets: COCO validity, boxes from visible alpha, determinism, bad input."""

import hashlib
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from neuralsim.assets.scenes import composite_by_depth
from neuralsim.data.boxes import box_from_mask

pytestmark = pytest.mark.slow  # end to end through the CLI or Mitsuba: `make test-fast` leaves them out


def test_composite_by_depth_handles_occlusion():
    # Object 0 covers columns 0..5 at depth 5; object 1 covers columns 3..8 at depth 3 (in front).
    rgba = np.zeros((2, 4, 9, 4), np.float32)
    rgba[0, :, 0:6] = [1, 0, 0, 1]
    rgba[1, :, 3:9] = [0, 0, 1, 1]
    depth = np.zeros((2, 4, 9), np.float32)
    depth[0, :, 0:6], depth[1, :, 3:9] = 5.0, 3.0
    image, visible = composite_by_depth(rgba, depth, np.full((4, 9, 3), 0.5, np.float32))
    np.testing.assert_allclose(image[0, 4], [0, 0, 1])  # the front object wins
    np.testing.assert_allclose(image[0, 1], [1, 0, 0])
    assert visible[0, 0].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]  # the back object's visible part only
    assert box_from_mask(visible[0] > 0.5).tolist() == [0, 0, 3, 4]
    # Half-transparent front layer: 'over' compositing.
    rgba[1, :, 3:9] = [0, 0, 0.5, 0.5]
    image, visible = composite_by_depth(rgba, depth, np.zeros((4, 9, 3), np.float32))
    np.testing.assert_allclose(image[0, 4], [0.5, 0, 0.5])
    np.testing.assert_allclose(visible[0, 0, 4], 0.5)


def test_scene_set_is_valid_coco_and_deterministic(cli, tmp_path):
    dist = {"objects": {"019_pitcher_base": {"azimuth": {"low": 0, "high": 360, "probs": [1, 0, 0, 0]},
                                             "lighting": {"names": ["studio", "dim_top"], "weights": [0.5, 0.5]}}}}
    (tmp_path / "d.json").write_text(json.dumps(dist))
    args = ["scenes", "019_pitcher_base", "025_mug", "--n", "4", "--size", "32", "--spp", "4", "--per-image", "1,2",
            "--distribution", tmp_path / "d.json", "--name", "val"]
    r = cli(*args, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    api = COCO(str(tmp_path / "a" / "annotations.json"))
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == ["019_pitcher_base", "025_mug"]
    anns = api.loadAnns(api.getAnnIds())
    assert len(anns) >= 4
    for ann in anns:
        mask = mask_utils.decode(ann["segmentation"]).astype(bool)
        x1, y1, x2, y2 = box_from_mask(mask)
        assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]  # box = tight box of the object's visible mask
        render = ann["render"]
        if render["object"] == "019_pitcher_base":
            assert 0 <= render["azimuth_deg"] < 90 and render["bins"]["azimuth"] == 0
            assert render["lighting"] in ("studio", "dim_top")
    images = api.loadImgs(api.getImgIds())
    assert [im["render"][0]["object"] for im in images] == ["019_pitcher_base", "025_mug"] * 2
    assert cli(*args, "--out", tmp_path / "b").returncode == 0
    for name in ["annotations.json"] + [im["file_name"] for im in images]:
        assert hashlib.sha256((tmp_path / "a" / name).read_bytes()).digest() == \
            hashlib.sha256((tmp_path / "b" / name).read_bytes()).digest()
    r = cli(*args[:-2], "--name", "test", "--out", tmp_path / "c")
    assert (tmp_path / "c" / "annotations.json").read_bytes() != (tmp_path / "a" / "annotations.json").read_bytes()


@pytest.mark.parametrize("dist,message", [
    ({"objects": {"025_mug": {"azimuth": {"low": 0, "high": 360, "probs": [0.5, -0.5, 1.0]}}}},
     "objects.025_mug.azimuth.probs: expected finite probabilities ≥ 0, got [0.5, -0.5, 1.0]"),
    ({"objects": {"025_mug": {"azimuth": {"low": 0, "high": 360, "probs": [0.5, 0.4]}}}},
     "objects.025_mug.azimuth.probs: expected probabilities that sum to 1 (these sum to 0.9), got [0.5, 0.4]"),
    ({"objects": {"025_mug": {"azimuth": {"low": "zero", "high": 360, "probs": [1.0]}}}},
     "objects.025_mug.azimuth.low: expected a number, got 'zero'"),
    ({"objects": {"025_mug": {"radius": {"probs": "abc"}}}}, "objects.025_mug.radius.probs: expected a list, got 'abc'"),
    ({"objects": {"025_mug": {"lighting": {"names": "studio", "weights": [1, 0, 0, 0, 0, 0]}}}},
     "objects.025_mug.lighting.names: expected a list, got 'studio'"),
    ({"objs": {}}, "objects: required, but not given"),
])
def test_bad_distribution_files_are_one_line_naming_the_field(cli, tmp_path, dist, message):
    (tmp_path / "d.json").write_text(json.dumps(dist))
    r = cli("scenes", "025_mug", "--n", "2", "--size", "16", "--distribution", tmp_path / "d.json", "--out", tmp_path / "o")
    assert r.returncode == 2 and r.stderr == f"error: Distribution file {tmp_path / 'd.json'}: {message}\n", r.stderr
    assert not (tmp_path / "o").exists()


def test_a_distribution_of_an_object_outside_the_set(cli, tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"objects": {"011_banana": {}}}))
    r = cli("scenes", "025_mug", "--n", "2", "--size", "16", "--distribution", tmp_path / "d.json", "--out", tmp_path / "o")
    assert r.returncode == 2 and "not in the set" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()


def test_a_set_name_that_is_a_path_is_refused(cli, tmp_path):
    out = tmp_path / "a" / "b" / "o"
    r = cli("scenes", "025_mug", "--n", "1", "--size", "8", "--spp", "1", "--name", "../../x", "--out", out)
    assert r.returncode == 2 and r.stderr == ("error: The scene set's --name: expected a plain name (letters, digits, "
                                              "_ - . and not starting with .), got '../../x'\n"), r.stderr
    assert [p for p in tmp_path.rglob("*")] == []


def test_bad_scene_sizes(cli, tmp_path):
    r = cli("scenes", "025_mug", "--n", "2", "--size", "-4", "--out", tmp_path / "o")
    assert r.returncode == 2 and "--size" in r.stderr
    r = cli("scenes", "025_mug", "--n", "2", "--per-image", "1,3", "--out", tmp_path / "o")
    assert r.returncode == 2 and "Objects per image" in r.stderr
