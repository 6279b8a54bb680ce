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
    (lambda d: d.pop("fl_x"), "intrinsics"),
    (lambda d: d.update(frames=[]), "no frames"),
    (lambda d: d["frames"][1].pop("transform_matrix"), "lacks file_path or transform_matrix"),
    (lambda d: d["frames"][0].update(transform_matrix=(np.eye(4) * 2).tolist()), "not rigid"),
    (lambda d: d.update(w="abc"), "must be numbers"), (lambda d: d.update(fl_x=None), "must be numbers"),
    (lambda d: d.update(k1=0.1), "lens distortion"), (lambda d: d.update(camera_model="OPENCV_FISHEYE"), "pinhole"),
    (lambda d: d.update(neuralsim=["x"]), "must be a JSON object"),
    (lambda d: d["neuralsim"].update(appearance_names=3), "list of names"),
    (lambda d: d["neuralsim"].update(appearance_names=["a", "b", "c"]), "c have no training frame"),
    (lambda d: d.update(test_filenames=[]), "test_filenames is empty"),
])
def test_bad_transforms(tmp_path, breakage, message):
    root = make_capture(tmp_path)
    edit(root, breakage)
    with pytest.raises(UserError, match=message):
        load_capture(root)


def test_malformed_json(tmp_path):
    root = make_capture(tmp_path)
    (root / "transforms.json").write_text("{ not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_capture(root)


def test_missing_image(tmp_path):
    root = make_capture(tmp_path)
    (root / "images/f2.png").unlink()
    with pytest.raises(UserError, match="f2.png .*missing"):
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
