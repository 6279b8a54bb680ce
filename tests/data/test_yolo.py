"""The YOLO layout: COCO → YOLO → COCO round trip on a non-square image, the label line format, data.yaml, empty
label files, malformed labels as one clear error, nothing left behind on bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from neuralsim.data.coco import CocoBuilder, load_coco
from neuralsim.data.yolo import read_data_yaml, read_yolo, write_yolo
from neuralsim.errors import UserError

W, H = 20, 16  # not square: a coordinate normalised by the wrong side shows
NAMES = ["can", 'tin: "red" # 2']  # a name that needs quoting in YAML
BOXES = {  # image → [(category, xyxy)]
    "a.png": [("tin: \"red\" # 2", [3, 2, 11, 14]), ("can", [0.25, 1.5, 19.75, 15.0])],
    "empty.png": [],
    "c.png": [("can", [12.5, 0, 20, 5.25])],
}


def make_set(root, boxes=BOXES):
    """A COCO set of W x H noise images; a name without a folder is put in `images/`."""
    coco = CocoBuilder(NAMES)
    rng = np.random.default_rng(0)
    for name, anns in boxes.items():
        file_name = name if "/" in name else f"images/{name}"
        (root / file_name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / file_name)
        image_id = coco.add_image(file_name, W, H)
        for category, box in anns:
            coco.add_annotation(image_id, category, box)
    coco.save(root / "annotations.json")
    return root


def test_boxes_round_trip_coco_yolo_coco(tmp_path):
    coco = make_set(tmp_path / "coco")
    yolo = write_yolo(coco, tmp_path / "yolo")
    back = read_yolo(yolo)
    original = json.loads((coco / "annotations.json").read_text())
    assert [c["name"] for c in back["categories"]] == NAMES and [c["id"] for c in back["categories"]] == [1, 2]
    assert [(im["file_name"], im["width"], im["height"]) for im in back["images"]] == \
        [(f"images/train/{n}", W, H) for n in sorted(BOXES)]
    by_name = {im["file_name"].split("/")[-1]: im["id"] for im in back["images"]}
    for old_id, name in enumerate(BOXES, 1):
        old = [a for a in original["annotations"] if a["image_id"] == old_id]
        new = [a for a in back["annotations"] if a["image_id"] == by_name[name]]
        assert [a["category_id"] for a in new] == [a["category_id"] for a in old]
        np.testing.assert_allclose(np.reshape([a["bbox"] for a in new], (-1, 4)),
                                   np.reshape([a["bbox"] for a in old], (-1, 4)), atol=1e-4)
    (yolo / "coco.json").write_text(json.dumps(back))  # a valid COCO set over the YOLO folder's images
    assert len(load_coco(yolo / "coco.json").samples) == 3


def test_label_lines_are_class_then_centre_and_size_normalised(tmp_path):
    yolo = write_yolo(make_set(tmp_path / "coco"), tmp_path / "yolo")
    # box (3, 2)–(11, 14) of class index 1: centre (7, 8) / (20, 16), size (8, 12) / (20, 16)
    lines = (yolo / "labels/train/a.txt").read_text().splitlines()
    assert lines == ["1 0.350000 0.500000 0.400000 0.750000", "0 0.500000 0.515625 0.975000 0.843750"]
    assert (yolo / "labels/train/c.txt").read_text() == "0 0.812500 0.164062 0.375000 0.328125\n"
    assert (yolo / "images/train/a.png").read_bytes() == (tmp_path / "coco/images/a.png").read_bytes()


def test_an_image_without_boxes_gets_an_empty_label_file(tmp_path):
    yolo = write_yolo(make_set(tmp_path / "coco"), tmp_path / "yolo")
    assert (yolo / "labels/train/empty.txt").read_text() == ""
    assert sorted(p.name for p in (yolo / "labels/train").iterdir()) == ["a.txt", "c.txt", "empty.txt"]


def test_data_yaml_names_the_folders_relative_to_itself_and_the_classes(tmp_path):
    yolo = write_yolo(make_set(tmp_path / "coco"), tmp_path / "yolo")
    text = (yolo / "data.yaml").read_text()
    assert "train: images/train\nval: images/train\n" in text and "path:" not in text
    assert 'nc: 2\nnames:\n  0: "can"\n  1: "tin: \\"red\\" # 2"\n' in text
    assert read_data_yaml(yolo / "data.yaml") == {"train": "images/train", "val": "images/train", "nc": "2",
                                                  "names": {0: "can", 1: NAMES[1]}}


def test_a_val_split_gets_its_own_folders(tmp_path):
    coco = make_set(tmp_path / "coco")
    yolo = write_yolo(coco, tmp_path / "yolo", split={1: "train", 2: "train", 3: "val"})
    assert "train: images/train\nval: images/val\n" in (yolo / "data.yaml").read_text()
    assert (yolo / "images/val/c.png").is_file() and (yolo / "labels/val/c.txt").is_file()
    assert not (yolo / "images/train/c.png").exists()
    assert [im["file_name"] for im in read_yolo(yolo)["images"]] == \
        ["images/train/a.png", "images/train/empty.png", "images/val/c.png"]
    with pytest.raises(UserError, match=r"images 3 of COCO file .* are given no split"):
        write_yolo(coco, tmp_path / "other", split={1: "train", 2: "val"})
    with pytest.raises(UserError, match="expected split names train, val, test, got 'valid'"):
        write_yolo(coco, tmp_path / "other", split={1: "train", 2: "valid", 3: "val"})
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("line,words", [
    ("0 0.5 0.5 0.2", "expected 5 fields `class cx cy w h`, got 4: '0 0.5 0.5 0.2'"),
    ("0 0.5 0.5 0.2 0.2 0.1", "expected 5 fields"),
    ("a 0.5 0.5 0.2 0.2", "class: expected a class index from 0 to 1, got 'a'"),
    ("2 0.5 0.5 0.2 0.2", "class: expected a class index from 0 to 1, got '2'"),
    ("0 0.5 half 0.2 0.2", "cy: expected a number in [0, 1] (normalised by the image's size), got 'half'"),
    ("0 0.5 0.5 12 0.2", "w: expected a number in [0, 1]"),
    ("0 -0.1 0.5 0.2 0.2", "cx: expected a number in [0, 1]"),
    ("0 0.5 0.5 0.2 nan", "h: expected a number in [0, 1]"),
])
def test_a_malformed_label_line_is_one_error_naming_file_and_line(tmp_path, line, words):
    yolo = write_yolo(make_set(tmp_path / "coco"), tmp_path / "yolo")
    label = yolo / "labels/train/c.txt"
    label.write_text(f"1 0.5 0.5 0.2 0.2\n\n{line}\n")
    with pytest.raises(UserError) as info:
        read_yolo(yolo)
    assert str(info.value).startswith(f"YOLO label file {label}: line 3: {words}")
    assert len(str(info.value).splitlines()) == 1


def test_bad_input_leaves_no_output_folder(tmp_path):
    for files in (["images/x.png", "other/x.png"], ["x.png", "x.jpg"]):
        twins = make_set(tmp_path / "twins", dict.fromkeys(files, []))
        with pytest.raises(UserError, match=r"images .*x\.\w+ and .*x\.\w+ would share the label file x\.txt"):
            write_yolo(twins, tmp_path / "yolo")
    # a box that passes as COCO (within half a pixel of the image) but covers none of it: fails inside the staging
    outside = make_set(tmp_path / "outside", {"a.png": [("can", [-0.5, 2, -0.1, 5])]})
    with pytest.raises(UserError, match="covers none of its 20x16 pixels"):
        write_yolo(outside, tmp_path / "yolo")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "twins"]
    earlier = write_yolo(make_set(tmp_path / "coco"), tmp_path / "yolo")
    with pytest.raises(UserError, match="covers none"):
        write_yolo(outside, earlier, overwrite=True)
    assert (earlier / "images/train/a.png").is_file() and len((earlier / "labels/train/a.txt").read_text().split()) == 10
    with pytest.raises(UserError, match="already holds files"):
        write_yolo(tmp_path / "coco", earlier)


def test_data_yaml_forms_other_tools_write(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text("# comment\npath: ../sets/x  # root\ntrain: images/train\nval: 'images/val'\ndownload: |\n"
                    "  import os\n  os.system('x')\nnc: 3\nnames: [person, 'it''s', \"a, b\"]\nextra:\n  key: 1\n")
    assert read_data_yaml(path) == {"path": "../sets/x", "train": "images/train", "val": "images/val", "nc": "3",
                                    "names": ["person", "it's", "a, b"]}
    path.write_text("train: images\nnames:\n  - cat\n  - 'dog'\n")
    assert read_data_yaml(path)["names"] == ["cat", "dog"]
    path.write_text("train: images\nnames:\n  - cat\n  1: dog\n")
    with pytest.raises(UserError, match=r"data.yaml: line 4: expected entries all of one form"):
        read_data_yaml(path)
    path.write_text("train: images\nnames: {0: cat}\n")
    with pytest.raises(UserError, match=r"line 2: expected a plain or quoted string, got 'names: \{0: cat\}'"):
        read_data_yaml(path)
