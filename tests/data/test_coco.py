import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from neuralsim.data.boxes import box_from_mask, mask_from_alpha
from neuralsim.data.coco import CocoBuilder, load_coco
from neuralsim.errors import UserError


def make_set(root, n=2):
    (root / "images").mkdir(parents=True)
    coco = CocoBuilder(["can", "box"])
    for i in range(n):
        Image.new("RGB", (20, 10)).save(root / f"images/{i}.png")
        image_id = coco.add_image(f"images/{i}.png", 20, 10)
        mask = np.zeros((10, 20), bool)
        mask[2:5, 3:9] = True
        coco.add_annotation(image_id, "box", box_from_mask(mask), mask)
    coco.save(root / "annotations.json")
    return root


def test_written_set_loads_in_pycocotools_and_back(tmp_path):
    root = make_set(tmp_path)
    api = COCO(str(root / "annotations.json"))
    ann = api.loadAnns(api.getAnnIds())[0]
    assert ann["bbox"] == [3.0, 2.0, 6.0, 3.0] and ann["category_id"] == 2 and ann["area"] == 18.0
    np.testing.assert_array_equal(api.annToMask(ann)[2:5, 3:9], 1)
    s = load_coco(root)
    assert s.category_names == ["can", "box"] and len(s.samples) == 2
    np.testing.assert_allclose(s.samples[0].boxes_xyxy, [[3, 2, 9, 5]])
    assert s.samples[0].labels.tolist() == [2]


@pytest.mark.parametrize("breakage,message", [
    (lambda d: d["annotations"][0].update(category_id=7), "annotations[0].category_id: expected a category id (1, 2), got 7"),
    (lambda d: d["annotations"][0].update(image_id=9), "annotations[0].image_id: expected the id of an image, got 9"),
    (lambda d: d["annotations"][0].update(bbox=[15.0, 2.0, 10.0, 3.0]),
     "annotations[0].bbox: expected a box inside its 20x10 image images/0.png, got [15.0, 2.0, 10.0, 3.0]"),
    (lambda d: d["annotations"][0].update(bbox=[1.0, 2.0, 0.0, 3.0]), "annotations[0].bbox: expected [x, y, width"),
    (lambda d: d["annotations"][0].update(bbox="3 2 6 3"), "annotations[0].bbox: expected a list, got '3 2 6 3'"),
    (lambda d: d["annotations"][0].update(bbox=[3, 2, "6", 3]), "annotations[0].bbox[2]: expected a number, got '6'"),
    (lambda d: d["images"][0].update(width="20"), "images[0].width: expected an integer, got '20'"),
    (lambda d: d["images"][1].update(id=1), "images[1].id: expected an id no other entry of images has, got 1"),
    (lambda d: d["categories"][0].update(id=0), "categories[0].id: expected greater than or equal to 1, got 0"),
    (lambda d: d.update(images=[], annotations=[]), "images: expected at least 1 item, got []"),
    (lambda d: d.pop("categories"), "categories: required, but not given"),
    (lambda d: d["images"][1].update(file_name="images/gone.png"),
     "images[1].file_name: expected an image file that exists (in {root}), got 'images/gone.png'"),
])
def test_bad_coco_is_one_line_naming_the_file_and_field(tmp_path, breakage, message):
    root = make_set(tmp_path)
    data = json.loads((root / "annotations.json").read_text())
    breakage(data)
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(UserError) as info:
        load_coco(root)
    error = str(info.value)
    assert error.startswith(f"COCO file {root / 'annotations.json'}: {message.format(root=root)}"), error
    assert "\n" not in error


def test_keys_coco_does_not_define_for_neuralsim_are_kept_or_ignored(tmp_path):
    root = make_set(tmp_path)
    data = json.loads((root / "annotations.json").read_text())
    data["licenses"] = []
    data["images"][0].update(render=[{"object": "box"}], coco_url="http://x")
    (root / "annotations.json").write_text(json.dumps(data))
    sample = load_coco(root).samples[0]
    assert sample.extra == {"render": [{"object": "box"}], "coco_url": "http://x"}


def test_mask_from_alpha_drops_floaters():
    alpha = np.zeros((12, 12))
    alpha[2:8, 2:8] = 0.9
    alpha[10, 10] = 1.0  # a one-pixel floater
    mask = mask_from_alpha(alpha, 0.5, min_pixels=4)
    assert not mask[10, 10]
    assert box_from_mask(mask).tolist() == [2, 2, 8, 8]
    assert box_from_mask(np.zeros((3, 3), bool)) is None
