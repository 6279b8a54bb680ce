import json

import numpy as np
import pytest
from PIL import Image

from neuralsim.cameras import Intrinsics, spherical_to_c2w
from neuralsim.data.transforms import Frame, load_capture, write_transforms
from neuralsim.errors import UserError


def make_capture(root, n=4, size=8, mode="RGBA", masks=False):
    """A tiny capture: n flat-colour images (object = left half) and a valid transforms.json."""
    (root / "images").mkdir(parents=True)
    frames = []
    for i in range(n):
        arr = np.zeros((size, size, 4), np.uint8)
        arr[:, : size // 2] = [200, 30, 30, 255]
        Image.fromarray(arr if mode == "RGBA" else arr[..., :3], mode).save(root / f"images/f{i}.png")
        mask = None
        if masks:
            Image.fromarray(arr[..., 3]).save(root / f"images/m{i}.png")
            mask = f"images/m{i}.png"
        frames.append(Frame(f"images/f{i}.png", spherical_to_c2w(90.0 * i, 20.0, 4.0).double().numpy(), i % 2, mask))
    write_transforms(root / "transforms.json", Intrinsics.from_fov(size, size, 40.0), frames,
                     {"train": [0, 1], "val": [2], "test": [3]}, {"appearance_names": ["a", "b"]})
    return root


def edit(root, fn):
    data = json.loads((root / "transforms.json").read_text())
    fn(data)
    (root / "transforms.json").write_text(json.dumps(data))


def test_round_trip(tmp_path):
    cap = load_capture(make_capture(tmp_path))
    assert len(cap.frames) == 4 and cap.splits == {"train": [0, 1], "val": [2], "test": [3]}
    assert cap.appearance_names == ["a", "b"] and cap.frames[3].appearance_id == 1
    rgba = cap.load_rgba(cap.frames[0])
    assert rgba.shape == (8, 8, 4)
    assert rgba[0, 0, 3] == 1.0 and rgba[0, -1, 3] == 0.0
    np.testing.assert_allclose(cap.frames[1].c2w, spherical_to_c2w(90.0, 20.0, 4.0).double().numpy(), atol=1e-6)


def test_rgb_with_mask_files(tmp_path):
    cap = load_capture(make_capture(tmp_path, mode="RGB", masks=True))
    assert cap.load_rgba(cap.frames[0])[0, -1, 3] == 0.0


def test_plain_nerfstudio_without_extras(tmp_path):
    root = make_capture(tmp_path, n=10)
    edit(root, lambda d: [d.pop(k) for k in ("neuralsim", "train_filenames", "val_filenames", "test_filenames")])
    cap = load_capture(root)
    assert cap.splits["test"] == [9] and len(cap.splits["train"]) == 9


@pytest.mark.parametrize("breakage,message", [
    (lambda d: d.pop("fl_x"), "fl_x: expected the focal length in pixels (or camera_angle_x), got None"),
    (lambda d: d.update(fl_x=float("nan")), "fl_x: expected a finite number, got nan"),
    (lambda d: d.update(fl_x=float("inf")), "fl_x: expected a finite number, got inf"),
    (lambda d: d.update(fl_y=-3.0), "fl_y: expected greater than 0, got -3.0"),
    (lambda d: d.update(fl_x="zero"), "fl_x: expected a number, got 'zero'"),
    (lambda d: d.update(cx=float("nan")), "cx: expected a finite number, got nan"),
    (lambda d: d.update(cx=30.0), "cx: expected a principal point inside the image (0 < cx < 8), got 30.0"),
    (lambda d: d.update(cy=-1), "cy: expected a principal point inside the image (0 < cy < 8), got -1.0"),
    (lambda d: d.update(w="abc"), "w: expected an integer, got 'abc'"),
    (lambda d: d.update(h=0), "h: expected greater than 0, got 0"),
    (lambda d: d.update(frames=[]), "frames: expected at least 1 item, got []"),
    (lambda d: d["frames"][1].pop("transform_matrix"), "frames[1].transform_matrix: required, but not given"),
    (lambda d: d["frames"][0].update(transform_matrix=(np.eye(4) * 2).tolist()),
     "frames[0].transform_matrix: expected a rigid 4x4"),
    (lambda d: d["frames"][0].update(transform_matrix=[[1, 0, 0], [0, 1, 0, 0]]), "frames[0].transform_matrix: expected"),
    (lambda d: d["frames"][2].update(appearance_id="1"), "frames[2].appearance_id: expected an integer, got '1'"),
    (lambda d: d.update(k1=0.1), "k1: expected 0: neuralsim models pinhole cameras only"),
    (lambda d: d.update(camera_model="OPENCV_FISHEYE"),
     "camera_model: expected 'OPENCV', 'PINHOLE' or 'SIMPLE_PINHOLE', got 'OPENCV_FISHEYE'"),
    (lambda d: d.update(neuralsim=["x"]), "neuralsim: expected an object, got ['x']"),
    (lambda d: d["neuralsim"].update(appearance_names="ab"), "neuralsim.appearance_names: expected a list, got 'ab'"),
    (lambda d: d["neuralsim"].update(appearance_names=["a", "b", "c"]),
     "neuralsim.appearance_names: expected lighting conditions that each have a training frame (the field could not "
     "learn the appearance of c)"),
    (lambda d: d.update(test_filenames=[]), "test_filenames: expected at least one frame"),
    (lambda d: d.update(val_filenames=["images/nothing.png"]),
     "val_filenames: expected file paths of frames, got 'images/nothing.png'"),
])
def test_bad_transforms_is_one_line_naming_the_file_and_field(tmp_path, breakage, message):
    root = make_capture(tmp_path)
    edit(root, breakage)
    with pytest.raises(UserError) as info:
        load_capture(root)
    error = str(info.value)
    assert error.startswith(f"Capture file {root / 'transforms.json'}: {message}"), error
    assert "\n" not in error


def test_keys_neuralsim_does_not_read_are_ignored(tmp_path):
    root = make_capture(tmp_path)
    edit(root, lambda d: d.update(aabb_scale=16, ply_file_path="sparse.ply") or d["frames"][0].update(colmap_im_id=3)
         or d["neuralsim"].update(capture={"views": 4}))
    capture = load_capture(root)
    assert len(capture.frames) == 4 and capture.meta["capture"] == {"views": 4}


def test_malformed_json(tmp_path):
    root = make_capture(tmp_path)
    (root / "transforms.json").write_text("{ not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_capture(root)


def test_missing_image(tmp_path):
    root = make_capture(tmp_path)
    (root / "images/f2.png").unlink()
    with pytest.raises(UserError, match=r"frames\[2\].file_path: expected an image file that exists, got 'images/f2.png'"):
        load_capture(root)


def test_every_image_is_decoded(tmp_path):
    root = make_capture(tmp_path)
    data = (root / "images/f3.png").read_bytes()
    (root / "images/f3.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="f3.png cannot be read"):
        load_capture(root)


def test_images_of_different_sizes(tmp_path):
    root = make_capture(tmp_path)
    Image.new("RGBA", (9, 8)).save(root / "images/f2.png")
    with pytest.raises(UserError, match="same size"):
        load_capture(root)


def test_no_alpha_and_no_mask(tmp_path):
    cap = make_capture(tmp_path, mode="RGB")
    with pytest.raises(UserError, match="no alpha"):
        load_capture(cap)


def test_a_mask_that_cannot_be_read(tmp_path):
    root = make_capture(tmp_path, mode="RGB", masks=True)
    (root / "images/m0.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="m0.png cannot be read"):
        load_capture(root)
