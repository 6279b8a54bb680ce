"""`neuralsim render`: a labelled COCO dataset from fields under ψ, reproducible from its seed, and refused cleanly
when ψ and the fields do not fit together."""

import json

import pytest
from PIL import Image
from pycocotools.coco import COCO

from neuralsim.sampling.init import PsiInit, init_psi

SIZE = 24


def write_psi(path, lighting=("tint_0",), objects=("a", "b")):
    psi = init_psi(PsiInit(list(objects), bins={"azimuth": 4, "elevation": 1, "radius": 1}, lighting=list(lighting),
                           kind="dominant", dominant={"a": {"azimuth": 2}}, p=1.0))
    return psi.save(path)


def test_render_writes_a_coco_set_drawn_from_psi(cli, sphere_field, tmp_path):
    psi = write_psi(tmp_path / "psi.json")
    args = ["render", f"a={sphere_field}", f"b={sphere_field}", "--psi", psi, "--n", "3", "--size", SIZE, "--seed", "4"]
    r = cli(*args, "--out", tmp_path / "set")
    assert r.returncode == 0, r.stderr
    api = COCO(str(tmp_path / "set" / "annotations.json"))
    images = api.loadImgs(api.getImgIds())
    assert len(images) == 6 and len(api.getAnnIds()) == 6  # the sphere fills part of every view
    for ann in api.loadAnns(api.getAnnIds()):
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE and w > 2 and h > 2
        assert api.annToMask(ann).sum() > 0
    renders = {im["file_name"]: im["render"][0] for im in images}
    a_bins = [r["bins"]["azimuth"] for name, r in renders.items() if name.startswith("images/a_")]
    assert a_bins == [2, 2, 2]  # ψ of a puts all its mass on bin 2 of [0°, 360°)
    assert all(180 <= r["azimuth_deg"] < 270 for name, r in renders.items() if name.startswith("images/a_"))
    for im in images:
        assert Image.open(tmp_path / "set" / im["file_name"]).size == (SIZE, SIZE)
    assert cli(*args, "--out", tmp_path / "again").returncode == 0  # same seed, same bytes
    for name in ["annotations.json"] + [im["file_name"] for im in images]:
        assert (tmp_path / "set" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    recorded = json.loads((tmp_path / "set" / "annotations.json").read_text())
    assert recorded["info"]["psi_file"] == str(psi) and recorded["info"]["psi"]["objects"]["a"] and recorded["info"]["seed"] == 4


@pytest.mark.parametrize("case, message", [
    ("missing field", "no field was given"),
    ("lighting order", "same order"),
    ("unknown lighting", "no lighting condition"),
])
def test_render_refuses_a_psi_that_does_not_fit_the_fields(cli, sphere_field, tmp_path, case, message):
    if case == "missing field":
        psi, fields = write_psi(tmp_path / "psi.json"), [f"a={sphere_field}"]
    elif case == "lighting order":
        psi, fields = tmp_path / "psi.json", [f"a={sphere_field}", f"b={sphere_field}"]
        data = json.loads(write_psi(psi, lighting=("tint_0", "studio")).read_text())
        data["objects"]["b"]["lighting"]["names"].reverse()
        psi.write_text(json.dumps(data))
    else:
        psi, fields = write_psi(tmp_path / "psi.json", lighting=("studio",)), [f"a={sphere_field}", f"b={sphere_field}"]
    r = cli("render", *fields, "--psi", psi, "--n", "1", "--size", SIZE, "--out", tmp_path / "set")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "set").exists()


def test_object_names_that_are_paths_name_no_file_outside_out(cli, sphere_field, tmp_path):
    psi = write_psi(tmp_path / "psi.json", objects=("../../x",))
    out = tmp_path / "a" / "b" / "set"
    r = cli("render", f"../../x={sphere_field}", "--psi", psi, "--n", "2", "--size", SIZE, "--out", out)
    assert r.returncode == 0, r.stderr
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents) == [psi]
    api = COCO(str(out / "annotations.json"))
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == ["../../x"]
    assert all((out / im["file_name"]).parent == out / "images" for im in api.loadImgs(api.getImgIds()))


@pytest.mark.parametrize("azimuth, message", [
    ({"low": "zero", "high": 360, "probs": [1.0]}, "objects.a.azimuth.low: expected a number, got 'zero'"),
    ({"probs": "abc"}, "objects.a.azimuth.probs: expected a list, got 'abc'"),
])
def test_render_refuses_a_psi_file_of_wrong_types_in_one_line(cli, tmp_path, azimuth, message):
    (tmp_path / "psi.json").write_text(json.dumps({"objects": {"a": {"azimuth": azimuth}}}))
    r = cli("render", f"a={tmp_path / 'field'}", "--psi", tmp_path / "psi.json", "--out", tmp_path / "set")
    assert r.returncode == 2 and r.stderr == f"error: ψ file {tmp_path / 'psi.json'}: {message}\n", r.stderr
    assert sorted(tmp_path.iterdir()) == [tmp_path / "psi.json"]
