"""`neuralsim train` and `neuralsim evaluate` end to end on a tiny set, and bad COCO input → one line, exit 2."""

import json

import pytest

pytestmark = pytest.mark.slow  # end to end through the CLI or Mitsuba: `make test-fast` leaves them out


def test_train_then_evaluate(cli, shapes_set, tmp_path):
    model_dir = tmp_path / "model"
    r = cli("train", shapes_set, "--out", model_dir, "--steps", "2", "--batch-size", "4", "--fpn-channels", "16",
            "--box-loss", "smooth_l1", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert {"model.safetensors", "detector.json", "config.json", "metrics.jsonl"} <= {p.name for p in model_dir.iterdir()}
    assert json.loads((model_dir / "detector.json").read_text())["box_loss"] == "smooth_l1"
    assert json.loads((model_dir / "config.json").read_text())["train"]["steps"] == 2
    r = cli("evaluate", model_dir, shapes_set, "--out", tmp_path / "eval.json", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["per_class"]) == {"red_box", "blue_disc"} and "AP50" in r.stdout
    r = cli("train", shapes_set, "--out", model_dir, "--steps", "1", "--init-from", model_dir)
    assert r.returncode == 2 and "--overwrite" in r.stderr  # an existing model folder is never replaced silently


def _break(root, how):
    path = root / "annotations.json"
    data = json.loads(path.read_text())
    if how == "unknown category":
        data["annotations"][0]["category_id"] = 9
    elif how == "box outside":
        data["annotations"][0]["bbox"] = [20.0, 20.0, 30.0, 5.0]
    elif how == "empty":
        data["images"], data["annotations"] = [], []
    elif how == "missing image":
        (root / data["images"][0]["file_name"]).unlink()
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("how,words", [
    ("unknown category", "category_id: expected a category id (1, 2), got 9"), ("box outside", "bbox: expected a box inside"),
    ("empty", "images: expected at least 1 item"), ("missing image", "file_name: expected an image file that exists")])
def test_bad_coco_input_gives_one_line_and_exit_code_2(cli, shapes_set, tmp_path, how, words):
    _break(shapes_set, how)
    r = cli("train", shapes_set, "--out", tmp_path / "model", "--steps", "1")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and words in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "model").exists()


def test_evaluate_without_a_model_is_a_user_error(cli, shapes_set, tmp_path):
    r = cli("evaluate", tmp_path / "nothing", shapes_set)
    assert r.returncode == 2 and "model.safetensors" in r.stderr
