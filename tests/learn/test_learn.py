"""`neuralsim learn` end to end at a tiny size: two objects given as field folders, photos of two sizes and
aspect ratios with one or two objects each, every stage, the report, a resume after a kill, and bad input."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from neuralsim.data.coco import CocoBuilder
from neuralsim.data.yolo import read_yolo
from neuralsim.fields.grid import GridFieldConfig
from neuralsim.fit.synthetic import write_sphere_capture
from neuralsim.fit.trainer import FitConfig, fit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def field_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sphere")
    capture = write_sphere_capture(root / "capture", views=16, size=32, lightings=2)
    cfg = FitConfig(steps=60, rays_per_step=1024, eval_every=0, occupancy_start=1000,
                    field=GridFieldConfig(density_resolution=24, feature_resolution=12, occupancy_resolution=16))
    fit(capture, root / "field", cfg, device=torch.device("cpu"), show_progress=False)
    return root / "field"


def write_photos(folder, n=10):
    """Photos 48x36 and 30x40 with a disc of "a" and, in every other one, "b" beside it."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    coco = CocoBuilder(["b", "a"])  # another order than the project's: the classes follow the project
    for i in range(n):
        w, h = (48, 36) if i % 2 else (30, 40)
        image = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
        name = f"images/p{i}.jpg"
        boxes = [("a", (2, 3, 14, 15))] + ([("b", (w - 14, h - 13, w - 2, h - 1))] if i % 2 else [])
        for _, (x1, y1, x2, y2) in boxes:
            image[y1:y2, x1:x2] = (220, 200, 180)
        Image.fromarray(image).save(folder / name, quality=90)
        image_id = coco.add_image(name, w, h)
        for cat, box in boxes:
            coco.add_annotation(image_id, cat, box)
    coco.save(folder / "annotations.json")
    return folder / "annotations.json"


TINY = {
    "size": 32,
    "learn": {"steps": 1, "images_per_object": 3, "bins": {"azimuth": 4, "elevation": 2, "radius": 2},
              "pretrain": {"images_per_object": 3, "epochs": 1}, "detector": {"fpn_channels": 16},
              "hypergradient": {"hvp_images": 3}, "method": {"method": "influence", "probes_per_bin": 1}},
    "export": {"size": 48, "images_per_object": 2, "quotas": {"b": 1}},
    "judge": {"seeds": 2, "images_per_object": 3, "epochs": 1},
    "device": "cpu",
}


@pytest.fixture
def project(tmp_path, field_dir):
    photos = write_photos(tmp_path / "photos")
    data = {"objects": [{"source": str(field_dir), "name": "a"}, {"source": str(field_dir), "name": "b"}],
            "photos": {"coco": "photos/annotations.json"}, **TINY}
    path = tmp_path / "project.json"
    path.write_text(json.dumps(data))
    assert photos.is_file()
    return path


def test_learn_runs_every_stage_and_resumes_to_the_same_bytes(cli, project, tmp_path):
    out = tmp_path / "out"
    r = cli("learn", project, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "Learned data scored" in r.stdout and "AP" in r.stdout
    # photos: split by class, letterboxed to 32 px, in the project's class order
    val, test = (COCO(str(out / "photos" / s / "annotations.json")) for s in ("val", "test"))
    assert [c["name"] for c in val.loadCats(val.getCatIds())] == ["a", "b"]
    for api in (val, test):
        assert all((im["width"], im["height"]) == (32, 32) and "letterbox" in im for im in api.loadImgs(api.getImgIds()))
    split = json.loads((out / "photos" / "split.json").read_text())
    assert sorted(split["val"] + split["test"]) == list(range(1, 11))
    # the run learned from ψ₀ = uniform with two objects per image (the most one photo shows)
    config = json.loads((out / "learn" / "config.json").read_text())
    assert config["source"]["objects_per_image"] == 2 and config["factors"] == ["azimuth", "elevation", "radius",
                                                                                  "lighting"]
    psi0 = json.loads((out / "psi0.json").read_text())["objects"]["a"]
    assert psi0["azimuth"]["probs"] == [0.25] * 4 and psi0["lighting"]["weights"] == [0.5, 0.5]
    # the dataset: 48 px, quotas per class, COCO with visibility, and YOLO that reads back to the same boxes
    data = COCO(str(out / "dataset" / "annotations.json"))
    images = data.loadImgs(data.getImgIds())
    assert len(images) == 3 and all((im["width"], im["height"]) == (48, 48) for im in images)
    anns = data.loadAnns(data.getAnnIds())
    assert anns and all(0 < a["visibility"] <= 1 and "render" in a for a in anns)
    yolo = read_yolo(out / "dataset" / "yolo")
    assert len(yolo["annotations"]) == len(anns)
    # the judge: paired seeds, scores in points, the detector kept, the report offline
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == 2 and len(summary["gain"]["gains"]) == 2 and set(summary["ap"]) == {"learned", "dr"}
    assert (out / "judge" / "detector" / "detector.json").is_file()
    report = (out / "report.html").read_text()
    assert "Learned data against domain randomisation" in report and "http" not in report.split("<body>")[1]
    assert set(json.loads((out / "stages.json").read_text())) == {"objects", "photos", "psi0", "learn", "export",
                                                                  "judge", "report"}
    # a second run reuses every stage
    again = cli("learn", project, "--out", out)
    assert again.returncode == 0 and again.stdout.count("step 1/1") == 0, again.stderr

    # killed during the judge, then resumed: the same bytes as the run that was never interrupted
    other = tmp_path / "other"
    proc = subprocess.Popen([sys.executable, "-m", "neuralsim.cli", "learn", str(project), "--out", str(other)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # the threads of `cli`'s runs
    deadline = time.time() + 600
    while not (other / "judge").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert cli("learn", project, "--out", other).returncode == 0
    for name in ["psi0.json", "learn/psi.json", "dataset/annotations.json", "judge/learned-s1.json",
                 "judge/dr-s0.json", "photos/test/annotations.json"]:
        assert (other / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.parametrize("case, message", [
    ("unknown category", "category"),
    ("unknown key", "bogus"),
    ("missing object", "no built-in object"),
    ("bad mesh", "cannot be read"),
    ("box outside", "inside its"),
    ("unreadable photo", "p3.jpg"),
    ("capture without alpha", "no alpha channel"),
])
def test_bad_input_is_one_line_and_writes_nothing(cli, project, tmp_path, case, message):
    data = json.loads(project.read_text())
    coco = tmp_path / "photos" / "annotations.json"
    if case == "unknown category":
        data["objects"] = data["objects"][:1]
    elif case == "unknown key":
        data["bogus"] = 1
    elif case == "missing object":
        data["objects"][1] = "no_such_thing"
    elif case == "bad mesh":
        (tmp_path / "broken.obj").write_text("v 1 2\nf 1 2 3 4 5\n")
        data["objects"][1] = {"source": "broken.obj", "name": "b"}
    elif case == "box outside":
        raw = json.loads(coco.read_text())
        raw["annotations"][0]["bbox"] = [20, 20, 40, 40]
        coco.write_text(json.dumps(raw))
    elif case == "capture without alpha":
        capture = write_sphere_capture(tmp_path / "capture", views=12, size=16)
        for png in (capture / "images").glob("*.png"):
            Image.open(png).convert("RGB").save(png)
        data["objects"][1] = {"source": "capture", "name": "b"}
    else:
        (tmp_path / "photos" / "images" / "p3.jpg").write_bytes(b"not a picture")
    project.write_text(json.dumps(data))
    r = cli("learn", project, "--out", tmp_path / "out")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
