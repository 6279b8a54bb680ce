import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from neuralsim.data.coco import CocoBuilder, load_coco
from neuralsim.data.photos import (
    Letterbox,
    evaluate_in_photo_frame,
    letterbox,
    load_photos,
    read_photo,
    split_photos,
    write_working_set,
)
from neuralsim.errors import UserError

OBJECTS = ["can", "box", "mug"]
COLOURS = {"can": (230, 20, 20), "box": (20, 230, 20), "mug": (230, 230, 20)}
BACKGROUND = (0, 0, 200)


def make_photos(root, photos, categories=("can", "box", "mug")):
    """A COCO file root/photos.json of PNG photos, each (width, height, [(category, xyxy box)]) painted with its
    objects' colours on a blue background."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    coco = CocoBuilder(list(categories))
    for i, (w, h, objects) in enumerate(photos):
        image = np.empty((h, w, 3), np.uint8)
        image[:] = BACKGROUND
        for name, (x1, y1, x2, y2) in objects:
            image[int(y1):int(y2), int(x1):int(x2)] = COLOURS[name]
        Image.fromarray(image).save(root / f"images/p{i}.png")
        image_id = coco.add_image(f"images/p{i}.png", w, h)
        for name, box in objects:
            coco.add_annotation(image_id, name, box)
    return coco.save(root / "photos.json")


TWO_PHOTOS = [(40, 30, [("can", (4, 6, 14, 20)), ("box", (20, 3, 36, 27))]),  # landscape
              (24, 36, [("box", (2, 4, 12, 14)), ("can", (6, 18, 22, 34)), ("box", (14, 2, 23, 11))])]  # portrait


# ----------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize("width,height,size", [(40, 30, 64), (24, 36, 64), (37, 23, 50), (23, 37, 17), (20, 20, 31)])
def test_boxes_go_to_the_working_frame_and_back(width, height, size):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1, (20, 4)) * [width, height, width, height]
    boxes = np.concatenate([np.minimum(xy[:, :2], xy[:, 2:]), np.maximum(xy[:, :2], xy[:, 2:])], axis=1)
    image, geometry = letterbox(np.zeros((height, width, 3), np.uint8), size)
    assert image.shape == (size, size, 3) and (geometry.width, geometry.height) == (width, height)
    assert geometry.scale == pytest.approx(size / max(width, height))
    pads = (geometry.pad_x, geometry.pad_y)
    assert pads == pytest.approx(((size - width * geometry.scale) / 2, (size - height * geometry.scale) / 2))
    working = geometry.to_working(boxes)
    assert working.min() >= -1e-9 and working.max() <= size + 1e-9
    np.testing.assert_allclose(geometry.to_photo(working), boxes, atol=1e-4)
    np.testing.assert_allclose(geometry.to_photo(torch.from_numpy(working)), boxes, atol=1e-4)
    np.testing.assert_allclose(geometry.to_photo([[-5.0, -5.0, size + 5, size + 5]]), [[0, 0, width, height]])


@pytest.mark.parametrize("width,height,box,size", [(40, 30, (9, 5, 21, 17), 64), (24, 36, (3, 20, 15, 31), 64),
                                                   (41, 27, (30, 1, 40, 9), 50), (27, 41, (2, 2, 19, 40), 20)])
def test_the_painted_object_lands_where_its_mapped_box_says(width, height, box, size):
    photo = np.empty((height, width, 3), np.uint8)
    photo[:] = BACKGROUND
    x1, y1, x2, y2 = box
    photo[y1:y2, x1:x2] = COLOURS["can"]
    image, geometry = letterbox(photo, size, fill=(114, 114, 114))
    (wx1, wy1, wx2, wy2), = geometry.to_working([box])
    red = (image[..., 0] > 160) & (image[..., 2] < 80)
    ys, xs = np.nonzero(red)
    assert len(xs) and xs.min() >= np.floor(wx1) - 1 and xs.max() + 1 <= np.ceil(wx2) + 1
    assert ys.min() >= np.floor(wy1) - 1 and ys.max() + 1 <= np.ceil(wy2) + 1
    inside = red[int(np.ceil(wy1)) + 1:int(np.floor(wy2)) - 1, int(np.ceil(wx1)) + 1:int(np.floor(wx2)) - 1]
    assert inside.size and inside.all()  # the box's inner pixels show the object
    (px1, py1, px2, py2), = geometry.to_working([(0, 0, width, height)])
    photo_pixels = np.zeros((size, size), bool)
    photo_pixels[int(np.floor(py1)):int(np.ceil(py2)), int(np.floor(px1)):int(np.ceil(px2))] = True
    assert (image[~photo_pixels] == 114).all()  # outside the photo: fill only
    assert (image[int(py1) + 1:int(py2) - 1, int(px1) + 1:int(px2) - 1] != 114).any(-1).all()  # inside: the photo


def test_letterbox_refuses_what_is_not_an_rgb_byte_image():
    with pytest.raises(ValueError):
        letterbox(np.zeros((4, 4), np.uint8), 8)
    with pytest.raises(ValueError):
        letterbox(np.zeros((4, 4, 3), np.float32), 8)


# ----------------------------------------------------------------------------- loading


def test_photos_of_any_size_load(tmp_path):
    photos = load_photos(make_photos(tmp_path, TWO_PHOTOS), OBJECTS)
    assert [(s.width, s.height) for s in photos.samples] == [(40, 30), (24, 36)]
    assert read_photo(photos.samples[1]).shape == (36, 24, 3)


def test_a_category_that_is_no_object_is_refused(tmp_path):
    path = make_photos(tmp_path, TWO_PHOTOS, categories=("can", "box", "cup"))
    with pytest.raises(UserError, match=r"photos.json: categories 'cup' are not among the objects \('can', 'box'"):
        load_photos(path, ["can", "box"])


@pytest.mark.parametrize("damage", [lambda p: p.write_bytes(b"not a png at all"),
                                    lambda p: p.write_bytes(p.read_bytes()[:60])])
def test_an_unreadable_photo_is_refused_by_name(tmp_path, damage):
    path = make_photos(tmp_path, TWO_PHOTOS)
    damage(tmp_path / "images/p1.png")
    with pytest.raises(UserError, match=r"Photo .*images/p1.png cannot be read") as info:
        load_photos(path, OBJECTS)
    assert "\n" not in str(info.value)


def test_a_box_outside_its_photo_is_refused(tmp_path):
    path = make_photos(tmp_path, TWO_PHOTOS)
    data = json.loads(path.read_text())
    data["annotations"][0]["bbox"] = [30.0, 4.0, 15.0, 10.0]  # reaches x = 45 in a 40 px wide photo
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"annotations\[0\].bbox: expected a box inside its 40x30 image"):
        load_photos(path, OBJECTS)


def test_a_photo_of_another_size_than_its_entry_is_refused(tmp_path):
    path = make_photos(tmp_path, TWO_PHOTOS)
    Image.new("RGB", (36, 24)).save(tmp_path / "images/p1.png")
    with pytest.raises(UserError, match=r"p1.png is 36x24 but its COCO entry says 24x36"):
        load_photos(path, OBJECTS)


def test_a_turned_phone_photo_is_read_the_way_its_entry_says(tmp_path):
    path = make_photos(tmp_path, TWO_PHOTOS)
    stored = np.zeros((24, 36, 3), np.uint8)
    stored[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90° clockwise, i.e. 24 wide and 36 high as its entry says
    Image.fromarray(stored).save(tmp_path / "images/p1.png", exif=exif)
    shown = read_photo(load_photos(path, OBJECTS).samples[1])
    assert shown.shape == (36, 24, 3) and shown[0, -1].tolist() == [255, 255, 255]


# ----------------------------------------------------------------------------- split


def one(name, w=40, h=30):
    return (w, h, [(name, (2, 2, 12, 12))])


BALANCED = [one("can"), one("can"), (40, 30, [("can", (2, 2, 12, 12)), ("box", (20, 2, 30, 12))]),
            (40, 30, [("can", (2, 2, 12, 12)), ("box", (20, 2, 30, 12))]), one("box"), one("box"),
            (40, 30, [("mug", (2, 2, 12, 12)), ("mug", (20, 2, 30, 12))]), one("mug"), one("mug")]


def box_counts(photos, ids):
    names = {c.id: c.name for c in photos.categories}
    counts = dict.fromkeys(photos.category_names, 0)
    for s in photos.samples:
        if s.image_id in ids:
            for label in s.labels:
                counts[names[int(label)]] += 1
    return counts


def test_the_split_halves_every_class_and_is_fixed_by_the_seed(tmp_path):
    photos = load_photos(make_photos(tmp_path, BALANCED), OBJECTS)
    val, test = split_photos(photos, seed=3)
    assert sorted(val + test) == [s.image_id for s in photos.samples] and val == sorted(val)
    assert box_counts(photos, val) == box_counts(photos, test) == {"can": 2, "box": 2, "mug": 2}
    assert split_photos(photos, seed=3) == (val, test)


def test_the_split_follows_the_fraction(tmp_path):
    specs = [one("can")] * 8 + [(40, 30, [("box", (2, 2, 12, 12)), ("box", (20, 2, 30, 12))])] * 4 + [one("mug")] * 4
    photos = load_photos(make_photos(tmp_path, specs), OBJECTS)
    val, test = split_photos(photos, val_fraction=0.25)
    assert box_counts(photos, val) == {"can": 2, "box": 2, "mug": 1}
    assert box_counts(photos, test) == {"can": 6, "box": 6, "mug": 3}


def test_the_split_does_not_depend_on_the_order_of_the_file(tmp_path):
    path = make_photos(tmp_path, BALANCED)
    first = split_photos(load_photos(path, OBJECTS), seed=1)
    data = json.loads(path.read_text())
    data["images"].reverse()
    data["annotations"].reverse()
    path.write_text(json.dumps(data))
    assert split_photos(load_photos(path, OBJECTS), seed=1) == first


def test_other_seeds_give_other_splits(tmp_path):
    photos = load_photos(make_photos(tmp_path, [one("can")] * 6 + [one("box")] * 6, OBJECTS[:2]), OBJECTS)
    splits = {tuple(split_photos(photos, seed=seed)[0]) for seed in range(6)}
    assert len(splits) > 1
    for val in splits:
        assert box_counts(photos, val) == {"can": 3, "box": 3}


def test_every_class_reaches_both_sides_even_when_balance_pulls_against_it(tmp_path):
    # mug's single box is in a photo with five cans: an even split of the cans alone would want it on one side
    specs = [(40, 30, [("can", (2 * i, 2, 2 * i + 2, 6)) for i in range(5)] + [("mug", (20, 2, 30, 12))]),
             one("mug"), one("can"), one("can")]
    photos = load_photos(make_photos(tmp_path, specs), OBJECTS)
    for seed in range(4):
        val, test = split_photos(photos, seed=seed)
        assert box_counts(photos, val)["can"] and box_counts(photos, test)["can"]
        assert box_counts(photos, val)["mug"] == box_counts(photos, test)["mug"] == 1


def test_a_class_in_too_few_photos_is_refused_by_name(tmp_path):
    photos = load_photos(make_photos(tmp_path, [one("can"), one("can"), one("box"), one("mug"), one("mug")]), OBJECTS)
    with pytest.raises(UserError, match=r"photos.json: class 'box' appears in only 1 photo\(s\); at least 2 are needed"):
        split_photos(photos)
    with pytest.raises(UserError, match=r"class 'can' appears in only 2 photo\(s\); at least 3"):
        split_photos(photos, min_per_class=3)


def test_classes_that_no_split_can_separate_are_refused(tmp_path):
    def pair(a, b):
        return (40, 30, [(a, (2, 2, 12, 12)), (b, (20, 2, 30, 12))])

    photos = load_photos(make_photos(tmp_path, [pair("can", "box"), pair("box", "mug"), pair("mug", "can")]), OBJECTS)
    with pytest.raises(UserError, match="found no split of the photos that puts every class into both validation"):
        split_photos(photos)


# ----------------------------------------------------------------------------- working sets and scoring


def test_the_working_set_holds_the_letterboxed_photos_and_is_reproducible(tmp_path):
    photos = load_photos(make_photos(tmp_path / "photos", TWO_PHOTOS), OBJECTS)
    first = write_working_set(photos, [2, 1], 64, tmp_path / "a", "test")
    second = write_working_set(photos, [2, 1], 64, tmp_path / "b", "test")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert [str(f) for f in files] == ["annotations.json", "images/0001_p1.png", "images/0002_p0.png"]
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for f in files:
        assert (first / f).read_bytes() == (second / f).read_bytes()
    with pytest.raises(UserError, match="already holds files"):
        write_working_set(photos, [2, 1], 64, tmp_path / "a", "test")
    write_working_set(photos, [2, 1], 64, tmp_path / "a", "test", overwrite=True)
    assert (first / "images/0001_p1.png").read_bytes() == (second / "images/0001_p1.png").read_bytes()

    working = load_coco(first)
    assert working.category_names == photos.category_names == ["can", "box", "mug"]
    portrait = working.samples[0]
    assert (portrait.width, portrait.height) == (64, 64)
    assert portrait.extra["photo_id"] == 2 and portrait.extra["photo_file"] == "images/p1.png"
    geometry = Letterbox(**portrait.extra["letterbox"])
    assert geometry == letterbox(read_photo(photos.samples[1]), 64)[1]
    np.testing.assert_allclose(portrait.boxes_xyxy, geometry.to_working(photos.samples[1].boxes_xyxy), atol=1e-4)
    assert portrait.labels.tolist() == photos.samples[1].labels.tolist()


def test_a_box_thinner_than_a_working_pixel_is_kept_a_pixel_wide(tmp_path):
    photos = load_photos(make_photos(tmp_path / "photos", [(400, 300, [("can", (399.5, 10, 400, 200))])]), OBJECTS)
    working = load_coco(write_working_set(photos, [1], 32, tmp_path, "thin"))
    (x1, y1, x2, y2), = working.samples[0].boxes_xyxy
    assert x2 - x1 == pytest.approx(1) and x2 <= 32 and y2 - y1 > 10


@pytest.fixture
def scored(tmp_path):
    """Photos, their working set at 64 px and detections equal to the photos' boxes in the working frame."""
    photos = load_photos(make_photos(tmp_path / "photos", TWO_PHOTOS), OBJECTS)
    working = load_coco(write_working_set(photos, [1, 2], 64, tmp_path, "val"))
    detections = []
    for sample, photo in zip(working.samples, photos.samples):
        geometry = Letterbox(**sample.extra["letterbox"])
        assert geometry.scale != 1 and (geometry.pad_x > 5 or geometry.pad_y > 5)
        boxes = torch.from_numpy(geometry.to_working(photo.boxes_xyxy)).float()
        detections.append({"boxes": boxes, "labels": torch.from_numpy(photo.labels) - 1,
                           "scores": torch.linspace(0.9, 0.5, len(boxes))})
    return photos, working, detections


def test_perfect_detections_score_one_in_the_photo_frame(scored):
    photos, working, detections = scored
    result = evaluate_in_photo_frame(detections, working, photos)
    assert result.ap == pytest.approx(1.0) and result.ap50 == pytest.approx(1.0)
    assert result.per_class["can"]["ap"] == pytest.approx(1.0) and result.per_class["mug"]["ap"] is None
    assert result.num_images == 2 and result.num_detections == 5


def test_shifted_detections_score_lower(scored):
    photos, working, detections = scored
    shifted = [{**d, "boxes": d["boxes"] + torch.tensor([3.0, 2.0, 3.0, 2.0])} for d in detections]
    assert evaluate_in_photo_frame(shifted, working, photos).ap < 0.8


@pytest.mark.parametrize("broken", [
    lambda to_photo, g, b: to_photo(replace(g, pad_x=0.0, pad_y=0.0), b),  # the padding forgotten
    lambda to_photo, g, b: to_photo(replace(g, scale=1.0), b),  # the scale forgotten
    lambda to_photo, g, b: to_photo(replace(g, pad_x=g.pad_y, pad_y=g.pad_x), b),  # the pads swapped
])
def test_scoring_needs_the_whole_letterbox(scored, monkeypatch, broken):
    photos, working, detections = scored
    to_photo = Letterbox.to_photo
    monkeypatch.setattr(Letterbox, "to_photo", lambda g, b: broken(to_photo, g, b))
    assert evaluate_in_photo_frame(detections, working, photos).ap50 < 0.5


def test_a_working_set_of_other_photos_is_refused(scored, tmp_path):
    photos, working, detections = scored
    other = load_photos(make_photos(tmp_path / "other", TWO_PHOTOS[::-1]), OBJECTS)
    with pytest.raises(UserError, match="does not match photo 1"):
        evaluate_in_photo_frame(detections, working, other)
