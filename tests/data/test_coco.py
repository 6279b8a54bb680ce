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
    (lambda d: d["annotations"][0].update(category_id=7), "unknown category id 7"),
    (lambda d: d["annotations"][0].update(bbox=[15.0, 2.0, 10.0, 3.0]), "outside"),
    (lambda d: d.update(images=[], annotations=[]), "no images"),
    (lambda d: d["images"][1].update(file_name="images/gone.png"), "missing"),
    (lambda d: d.pop("categories"), "lacks a 'categories'"),
])
def test_bad_coco(tmp_path, breakage, message):
    root = make_set(tmp_path)
    data = json.loads((root / "annotations.json").read_text())
    breakage(data)
    (root / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=message):
        load_coco(root)


def test_mask_from_alpha_drops_floaters():
    alpha = np.zeros((12, 12))
    alpha[2:8, 2:8] = 0.9
    alpha[10, 10] = 1.0  # a one-pixel floater
    mask = mask_from_alpha(alpha, 0.5, min_pixels=4)
    assert not mask[10, 10]
    assert box_from_mask(mask).tolist() == [2, 2, 8, 8]
    assert box_from_mask(np.zeros((3, 3), bool)) is None
