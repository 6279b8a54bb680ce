"""Fitting fields to tiny captures made in code: quality per lighting condition, plain nerfstudio captures,
resume after an interruption, and the `neuralsim fit` command (smoke and bad input → exit code 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import neuralsim
from neuralsim.cli import main
from neuralsim.fields import GridFieldConfig, load_field
from neuralsim.fit import FitConfig, fit, trainer
from neuralsim.fit.synthetic import write_plain_nerfstudio_capture, write_sphere_capture
from neuralsim.render import render

CPU = torch.device("cpu")
SMALL_FIELD = GridFieldConfig(density_resolution=32, feature_resolution=16, feature_channels=8,
                              occupancy_resolution=16, hidden_width=32)


def _config(steps: int, **kw) -> FitConfig:
    return FitConfig(steps=steps, rays_per_step=1024, eval_every=0, occupancy_start=50, occupancy_every=50,
                     field=SMALL_FIELD, **kw)


@pytest.fixture(scope="module")
def sphere_capture(tmp_path_factory) -> Path:
    return write_sphere_capture(tmp_path_factory.mktemp("capture"), views=24, size=24, lightings=2)


def test_fit_reproduces_every_lighting_condition(sphere_capture, tmp_path):
    evaluation = fit(sphere_capture, tmp_path / "field", _config(200), device=CPU, show_progress=False)
    assert set(evaluation) == {"tint_0", "tint_1", "mean"}
    for name in ("tint_0", "tint_1"):
        assert evaluation[name]["psnr"] > 24.0, evaluation
        assert evaluation[name]["ssim"] > 0.85, evaluation
    field = load_field(tmp_path / "field")
    assert field.appearance.names == ["tint_0", "tint_1"]
    white, tinted = (render(field, 30.0, 20.0, 4.0, k, 24, 40.0) for k in (0, 1))
    on_object = white.alpha > 0.9
    # tint_1 multiplies blue by 0.5: its anchor must render the object clearly bluer-less than tint_0's.
    assert (white.rgb[on_object][:, 2] - tinted.rgb[on_object][:, 2]).mean() > 0.05
    saved = json.loads((tmp_path / "field" / "eval.json").read_text())
    assert saved["test"]["mean"]["psnr"] == pytest.approx(evaluation["mean"]["psnr"])


def test_plain_nerfstudio_capture_with_mask_files_fits(tmp_path):
    capture = write_plain_nerfstudio_capture(tmp_path / "plain", views=20, size=20)
    data = json.loads((capture / "transforms.json").read_text())
    assert "appearance_id" not in data["frames"][0] and "neuralsim" not in data
    evaluation = fit(capture, tmp_path / "field", _config(150), device=CPU, show_progress=False)
    assert evaluation["mean"]["psnr"] > 22.0, evaluation


def test_resume_after_interruption_equals_an_uninterrupted_fit(sphere_capture, tmp_path, monkeypatch):
    config = _config(40, checkpoint_every=10)
    fit(sphere_capture, tmp_path / "whole", config, device=CPU, show_progress=False)

    _fit_interrupted_at(25, sphere_capture, tmp_path / "resumed", config, monkeypatch)
    assert not (tmp_path / "resumed" / "field.json").exists()
    fit(sphere_capture, tmp_path / "resumed", config, device=CPU, resume=True, steps_given=False, show_progress=False)
    _assert_same_field(tmp_path / "whole", tmp_path / "resumed")


def _fit_interrupted_at(step: int, capture: Path, out: Path, config: FitConfig, monkeypatch) -> None:
    """Start a fit and stop it as a kill would, just before `step`."""
    original = trainer.train_step

    def interrupted(field, optimizer, bank, cfg, t):
        if t == step:
            raise KeyboardInterrupt
        return original(field, optimizer, bank, cfg, t)

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "train_step", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fit(capture, out, config, device=CPU, show_progress=False)


def _assert_same_field(a_dir: Path, b_dir: Path) -> None:
    a_field, b_field = load_field(a_dir), load_field(b_dir)
    for (name, a), (_, b) in zip(a_field.state_dict().items(), b_field.state_dict().items()):
        assert torch.equal(a, b), name


def test_cli_fit_smoke(sphere_capture, tmp_path, capsys):
    out = tmp_path / "field"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(sphere_capture), "--out", str(out), "--steps", "3", "--rays-per-step", "256", "--device", "cpu"])
    assert exit_info.value.code in (0, None)
    assert {"field.safetensors", "field.json", "eval.json", "config.json", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    assert "PSNR" in capsys.readouterr().out


def _broken_capture(base: Path, tmp_path: Path, problem: str) -> Path:
    capture = tmp_path / "broken"
    shutil.copytree(base, capture)
    path = capture / "transforms.json"
    data = json.loads(path.read_text())
    if problem == "missing fields":
        del data["fl_x"]
    elif problem == "non-rigid matrix":
        data["frames"][2]["transform_matrix"][0][0] *= 2.0
    elif problem == "missing image":
        (capture / data["frames"][3]["file_path"]).unlink()
    elif problem == "different sizes":
        from PIL import Image

        Image.new("RGBA", (10, 12)).save(capture / data["frames"][4]["file_path"])
    elif problem == "no alpha and no mask":
        from PIL import Image

        for frame in data["frames"]:
            image = capture / frame["file_path"]
            Image.open(image).convert("RGB").save(image)
    elif problem.startswith("truncated"):  # a training frame after the first, or a test frame (every 7th)
        image = capture / data["frames"][19 if problem == "truncated training frame" else 20]["file_path"]
        image.write_bytes(image.read_bytes()[:-40])
    elif problem in ("NaN fl_x", "NaN cx", "Infinity fl_x", "cx outside"):
        key, value = {"NaN fl_x": ("fl_x", float("nan")), "NaN cx": ("cx", float("nan")),
                      "Infinity fl_x": ("fl_x", float("inf")), "cx outside": ("cx", 30.0)}[problem]
        data[key] = value  # Python's json writes and reads NaN and Infinity
    path.write_text(json.dumps(data))
    return capture


@pytest.mark.parametrize("problem, message", [
    ("missing fields", "fl_x: expected the focal length"), ("non-rigid matrix", "frames[2].transform_matrix: expected"),
    ("missing image", "frames[3].file_path: expected an image file that exists"), ("different sizes", "is 10x12"),
    ("no alpha and no mask", "no alpha channel"), ("truncated training frame", "images/019.png cannot be read"),
    ("truncated test frame", "images/020.png cannot be read"), ("NaN fl_x", "fl_x: expected a finite number, got nan"),
    ("Infinity fl_x", "fl_x: expected a finite number, got inf"), ("NaN cx", "cx: expected a finite number, got nan"),
    ("cx outside", "cx: expected a principal point inside the image (0 < cx < 24), got 30.0"),
])
def test_cli_bad_capture_is_one_line_and_exit_code_2_before_out_is_made(sphere_capture, tmp_path, capsys, problem,
                                                                        message):
    capture = _broken_capture(sphere_capture, tmp_path, problem)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(capture), "--out", str(tmp_path / "field"), "--steps", "2", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "field").exists()


@pytest.mark.parametrize("weight", ["-0.1", "nan"])
def test_cli_bad_distortion_weight_is_one_line_and_exit_code_2(sphere_capture, tmp_path, capsys, weight):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(sphere_capture), "--out", str(tmp_path / "field"), "--distortion-weight", weight, "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--distortion-weight" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "field").exists()


def test_cli_resume_from_checkpoint_of_another_version_exits_2(sphere_capture, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    out = tmp_path / "field"
    fit(sphere_capture, out, _config(4, checkpoint_every=2), device=CPU, show_progress=False)
    state = out / trainer.TRAIN_STATE_FILE
    save_file(load_file(str(state)), str(state), metadata={"format_version": "0", "step": "2"})
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(sphere_capture), "--out", str(out), "--resume", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "format version" in err and len(err.splitlines()) == 1


def test_cli_existing_output_needs_overwrite(sphere_capture, tmp_path, capsys):
    out = tmp_path / "field"
    out.mkdir()
    (out / "something").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(sphere_capture), "--out", str(out), "--steps", "2", "--device", "cpu"])
    assert exit_info.value.code == 2 and "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("option,value", [("--rays-per-step", "0"), ("--rays-per-step", "-1"), ("--steps", "0"),
                                          ("--eval-every", "-5")])
def test_cli_bad_numbers_are_one_line_and_exit_code_2(sphere_capture, tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(sphere_capture), "--out", str(tmp_path / "field"), option, value, "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert f"{option} {value}" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "field").exists()


def test_cli_resume_with_another_capture_exits_2(sphere_capture, tmp_path, capsys):
    import shutil

    out = tmp_path / "field"
    fit(sphere_capture, out, _config(4, checkpoint_every=2), device=CPU, show_progress=False)
    other = shutil.copytree(sphere_capture, tmp_path / "other")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(other), "--out", str(out), "--resume", "--device", "cpu"])
    assert exit_info.value.code == 2 and "resume it with its own capture" in capsys.readouterr().err


def test_resume_before_the_first_checkpoint_starts_over(sphere_capture, tmp_path, monkeypatch):
    config = _config(12, checkpoint_every=10)
    fit(sphere_capture, tmp_path / "whole", config, device=CPU, show_progress=False)
    _fit_interrupted_at(6, sphere_capture, tmp_path / "stopped", config, monkeypatch)
    assert not (tmp_path / "stopped" / trainer.TRAIN_STATE_FILE).exists()
    fit(sphere_capture, tmp_path / "stopped", config, device=CPU, resume=True, steps_given=False, show_progress=False)
    _assert_same_field(tmp_path / "whole", tmp_path / "stopped")


def test_the_first_checkpoint_comes_within_the_first_few_dozen_steps(sphere_capture, tmp_path, monkeypatch):
    from safetensors import safe_open

    config = FitConfig(steps=100, rays_per_step=64, eval_every=0, field=SMALL_FIELD)  # the default checkpoints
    _fit_interrupted_at(30, sphere_capture, tmp_path / "stopped", config, monkeypatch)
    with safe_open(str(tmp_path / "stopped" / trainer.TRAIN_STATE_FILE), framework="pt") as f:
        assert int(f.metadata()["step"]) <= 25


def test_cli_resume_of_a_fit_written_by_another_version_exits_2(sphere_capture, tmp_path, capsys):
    out = tmp_path / "field"
    fit(sphere_capture, out, _config(2), device=CPU, show_progress=False)
    (out / "neuralsim.json").write_text(json.dumps({"version": "0.0.1"}))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(sphere_capture), "--out", str(out), "--resume", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: Cannot resume: {out} was written by neuralsim 0.0.1, this is neuralsim "
                   f"{neuralsim.__version__}; start the run again with --overwrite."), err


@pytest.mark.slow
def test_two_fits_at_two_threads_at_once_give_the_same_field(sphere_capture, tmp_path):
    """Same seed, same bytes at the thread count a run uses, even with another run competing for the cores: the
    backward of indexing with repeated indices (each ray's appearance embedding) must not add with atomics."""
    import os
    import subprocess
    import sys

    env = os.environ | {"OMP_NUM_THREADS": "2"}
    args = ["--steps", "30", "--rays-per-step", "2048"]
    runs = [subprocess.Popen([sys.executable, "-m", "neuralsim", "fit", str(sphere_capture), "--out", str(tmp_path / n),
                              *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for n in "ab"]
    assert all(r.wait(timeout=600) == 0 for r in runs), [r.stderr.read() for r in runs]
    assert (tmp_path / "a" / "field.safetensors").read_bytes() == (tmp_path / "b" / "field.safetensors").read_bytes()
