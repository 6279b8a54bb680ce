"""`neuralsim evaluate --detections`: the detections as a COCO results file, with the set's own image and category
ids, that pycocotools reads against the set and scores to the AP the command reports."""

import contextlib
import io
import json

import pytest
from typer.testing import CliRunner

from neuralsim.tasks.checkpoint import save_detector
from neuralsim.tasks.data import CocoDetectionData
from neuralsim.tasks.evaluate import predict_coco_results, score_coco_results
from neuralsim.tasks.train import TrainConfig, train_detector


def _renumber_images(root):
    """Give the set's images ids that are neither 1, 2, … nor in file order, and list its categories backwards."""
    path = root / "annotations.json"
    data = json.loads(path.read_text())
    new_id = {im["id"]: 1000 - 7 * im["id"] for im in data["images"]}
    for im in data["images"]:
        im["id"] = new_id[im["id"]]
    for ann in data["annotations"]:
        ann["image_id"] = new_id[ann["image_id"]]
    data["categories"].reverse()
    path.write_text(json.dumps(data))


def test_evaluate_writes_coco_results_that_pycocotools_scores_the_same(shapes_set, make_detector, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from neuralsim.cli import app

    model = make_detector(seed=0, score_thresh=0.001)  # a dozen steps leave scores low: keep 100 per image
    train_detector(model, CocoDetectionData.load(shapes_set), TrainConfig(steps=12, batch_size=4, lr=2e-3,
                                                                         warmup_steps=2), show_progress=False)
    save_detector(model, tmp_path / "model")
    _renumber_images(shapes_set)

    out, detections = tmp_path / "eval.json", tmp_path / "detections.json"
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "model"), str(shapes_set), "--out", str(out),
                                 "--detections", str(detections), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    reported = json.loads(out.read_text())
    results = json.loads(detections.read_text())
    assert results and reported["ap"] > 0 and reported["num_detections"] == len(results)
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} and len(d["bbox"]) == 4 for d in results)
    assert {d["image_id"] for d in results} <= {1000 - 7 * i for i in range(1, 9)}
    assert {d["category_id"] for d in results} <= {1, 2}

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(shapes_set / "annotations.json"))
        E = COCOeval(gt, gt.loadRes(str(detections)), "bbox")
        E.evaluate()
        E.accumulate()
        E.summarize()
    assert E.stats[0] == pytest.approx(reported["ap"], abs=1e-12)
    assert E.stats[1] == pytest.approx(reported["ap50"], abs=1e-12)
    assert f"AP {100 * E.stats[0]:5.1f}" in r.output

    # the functions behind the command: scoring leaves the results as they were predicted
    data = CocoDetectionData.load(shapes_set)
    again = predict_coco_results(model, data)
    assert score_coco_results(again, data).ap == pytest.approx(reported["ap"], abs=1e-12)
    assert again == results
