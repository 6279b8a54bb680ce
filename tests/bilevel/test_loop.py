"""The bilevel loop end to end at a tiny size: fields fitted to a synthetic capture, COCO val/test sets made in
code, a small RetinaNet; ψ moves under nso, stays under ns, resume reproduces an uninterrupted run."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from neuralsim.bilevel.config import OptimizeConfig, PretrainConfig
from neuralsim.bilevel.estimators import SecondOrderConfig, method_config
from neuralsim.bilevel.estimators.lts import LTSConfig
from neuralsim.bilevel.estimators.nso import NSOConfig
from neuralsim.bilevel.field_source import SourceConfig
from neuralsim.bilevel.inverse_hvp import InverseHVPConfig
from neuralsim.bilevel.loop import BilevelRun
from neuralsim.data.coco import CocoBuilder
from neuralsim.errors import UserError
from neuralsim.sampling.init import PsiInit, init_psi
from neuralsim.sampling.psi import Psi
from neuralsim.tasks.checkpoint import load_detector, save_detector
from neuralsim.tasks.detector import DetectorConfig
from neuralsim.tasks.evaluate import image_losses
from neuralsim.tasks.train import TrainConfig

SIZE = 32


@pytest.fixture(scope="module")
def assets(tmp_path_factory, sphere_field):
    root = tmp_path_factory.mktemp("loop")
    (root / "field").symlink_to(sphere_field, target_is_directory=True)
    for split in ("val", "test"):
        coco = CocoBuilder(["a", "b"])
        (root / split / "images").mkdir(parents=True)
        for i in range(4):
            img = np.full((SIZE, SIZE, 3), 90, np.uint8)
            img[8:24, 8 + i:24 + i] = [200, 60, 60]
            Image.fromarray(img).save(root / split / f"images/{i}.png")
            image_id = coco.add_image(f"images/{i}.png", SIZE, SIZE)
            coco.add_annotation(image_id, "ab"[i % 2], [8 + i, 8, 24 + i, 24])
        coco.save(root / split / "annotations.json")
    return root


def config(root, method="nso", steps=2) -> OptimizeConfig:
    return OptimizeConfig(
        fields={"a": str(root / "field"), "b": str(root / "field")}, val=str(root / "val"), test=str(root / "test"),
        bins={"azimuth": 4, "elevation": 1, "radius": 1}, lighting=["tint_0"],
        method=NSOConfig(tau=0.5) if method == "nso" else method_config(method), steps=steps,
        images_per_object=3, source=SourceConfig(backgrounds=4, patch_rays=512),
        detector=DetectorConfig(backbone="resnet18", fpn_channels=16, head_activation="silu"),
        pretrain=PretrainConfig(images_per_object=2, epochs=1),
        train=TrainConfig(epochs=1, batch_size=3, trainable="all", warmup_steps=1),
        hypergradient=SecondOrderConfig(hvp_images=2, inverse_hvp=InverseHVPConfig(iterations=2, damping=0.1)),
        batch_size=4)


def psi_of(run_dir):
    return Psi.load(run_dir / "psi.json").probabilities()


def test_nso_moves_psi_and_logs_every_step(assets, tmp_path):
    path = BilevelRun(config(assets), tmp_path / "nso").run_all()
    metrics = [json.loads(l) for l in (path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1]
    for key in ("val_loss", "test_ap", "per_class", "psi", "psi_after", "cg_residual", "seconds", "peak_memory_mb"):
        assert key in metrics[0]
    seconds = metrics[0]["seconds"]  # every phase of an nso step timed, and the phases inside the step's total
    phases = ("render", "train", "val_grad", "inverse_hvp", "mixed", "render_vjp", "evaluate")
    assert set(seconds) == {*phases, "total"} and all(seconds[p] > 0 for p in phases)
    assert sum(seconds[p] for p in phases) <= seconds["total"]
    peaks = metrics[0]["peak_memory_mb_by_phase"]
    assert set(peaks) == set(phases) and metrics[0]["peak_memory_mb"] == max(peaks.values()) > 0
    assert np.isfinite(metrics[0]["hypergradient_norm"]) and metrics[0]["hypergradient_norm"] > 0
    leaves = metrics[0]["hypergradient"]  # the logged h per leaf, whose norm is the logged norm
    assert set(leaves) == {"a/azimuth", "b/azimuth"} and all(len(g) == 4 for g in leaves.values())
    assert np.sqrt(sum(np.square(g).sum() for g in leaves.values())) == pytest.approx(metrics[0]["hypergradient_norm"])
    # 2 objects × 3 training images, each rendered again with gradients in pass 2
    assert metrics[0]["renders"] == {"training": 6, "replay_renders": 6} and metrics[0]["images_rendered"] == 12
    first, last = np.array(metrics[0]["psi"]["a"]["azimuth"]), np.array(psi_of(path)["a"]["azimuth"])
    np.testing.assert_allclose(first, 0.25)
    assert np.abs(last - first).max() > 1e-3  # ψ moved
    np.testing.assert_allclose(last.sum(), 1.0)
    assert (path / "samples" / "step_000.png").is_file() and (path / "checkpoint" / "detector-0001").is_dir()
    assert sorted(p.name for p in (path / "checkpoint").iterdir()) == ["detector-0001", "state.json"]
    assert (path / "pretrained" / "model.safetensors").is_file()  # no detector_init: pre-trained on ψ₀ in the run folder


def test_nso_with_an_l1_box_loss_warns_that_boxes_cannot_move(assets, tmp_path):
    from neuralsim.tasks.detector import build_from_config

    cfg = config(assets)
    l1 = dataclasses.replace(cfg.detector, box_loss="l1", num_classes=2, category_names=["a", "b"], image_size=SIZE)
    cfg = dataclasses.replace(cfg, detector_init=str(save_detector(build_from_config(l1), tmp_path / "l1-detector")))
    with pytest.warns(UserWarning, match="box loss is L1"):
        BilevelRun(cfg, tmp_path / "l1")


def test_ns_keeps_psi_and_logs_the_losses_per_class(assets, tmp_path):
    run = BilevelRun(config(assets, method="ns", steps=1), tmp_path / "ns")
    path = run.run_all()
    np.testing.assert_allclose(psi_of(path)["b"]["azimuth"], 0.25)
    record = json.loads((path / "metrics.jsonl").read_text())
    assert record["val_loss"] == pytest.approx(run.val_loss(run.model))
    for split, data in (("val", run.val), ("test", run.test)):
        per_image = image_losses(run.model, data)  # images 0, 2 show a; 1, 3 show b
        expected = {"a": float(per_image[[0, 2]].mean()), "b": float(per_image[[1, 3]].mean())}
        assert record[f"{split}_loss_per_class"] == pytest.approx(expected)
        assert record[f"{split}_loss"] == pytest.approx(float(per_image.mean())) and expected["a"] != expected["b"]


@pytest.mark.parametrize("optimizer", ["normalized", "gated"])
def test_resume_reaches_the_same_psi(assets, tmp_path, optimizer):
    def cfg(steps):
        c = config(assets, steps=steps)  # gated: its sums and ψ₀ travel in the checkpoint
        return dataclasses.replace(c, psi_optimizer=dataclasses.replace(c.psi_optimizer, method=optimizer, gate=0.5))

    full = BilevelRun(cfg(2), tmp_path / "full").run_all()
    cut = BilevelRun(cfg(1), tmp_path / "cut").run_all()  # as if killed after step 0
    # ... and killed again while checkpointing step 1: its detector written, state.json not yet
    model = load_detector(cut / "checkpoint" / "detector-0000")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    save_detector(model, cut / "checkpoint" / "detector-0001")
    resumed = BilevelRun(cfg(2), tmp_path / "cut", resume=True).run_all()
    assert psi_of(resumed) == psi_of(full)
    assert [json.loads(l)["step"] for l in (resumed / "metrics.jsonl").read_text().splitlines()] == [0, 1]


def test_influence_renders_its_probes(assets, tmp_path):
    path = BilevelRun(config(assets, method="influence", steps=1), tmp_path / "influence").run_all()
    record = json.loads((path / "metrics.jsonl").read_text())
    assert {"probe_render", "grad_dot"} <= set(record["seconds"]) and "render_vjp" not in record["seconds"]
    # probes: 2 objects × 4 azimuth bins × 4 per bin (elevation and radius have one bin each but are not optimised)
    assert record["renders"] == {"training": 6, "probe_renders": 32} and record["images_rendered"] == 38


def test_optimize_runs_from_a_config_of_fields_val_and_test(cli, assets, tmp_path):
    """The smallest config: everything else at its defaults (influence, the validation images' size, a detector
    pre-trained on ψ₀ in the run folder), only the sizes made small on the command line."""
    minimal = {"fields": {"a": str(assets / "field"), "b": str(assets / "field")}, "val": str(assets / "val"),
               "test": str(assets / "test")}
    (tmp_path / "optimize.json").write_text(json.dumps(minimal))
    r = cli("optimize", tmp_path / "optimize.json", "--out", tmp_path / "run", "--steps", "1", "--images-per-object", "4",
            "--pretrain.images-per-object", "4", "--pretrain.epochs", "2", "--hypergradient.hvp-images", "4")
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["method"]["method"] == "influence" and saved["steps"] == 1 and saved["pretrain"]["epochs"] == 2
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert record["method"] == "influence" and record["hypergradient_norm"] > 0
    assert (tmp_path / "run" / "pretrained").is_dir()
    report = (tmp_path / "run" / "report.html").read_text()  # the method by its name
    assert "1 outer steps of influence with 4 images per object" in report


def test_lts_trains_k_detectors_per_step_and_logs_their_rewards(assets, tmp_path):
    cfg = dataclasses.replace(config(assets, steps=1), method=LTSConfig(datasets=2))
    path = BilevelRun(cfg, tmp_path / "lts").run_all()
    record = json.loads((path / "metrics.jsonl").read_text())
    assert len(record["lts_rewards"]) == 2 and all(np.isfinite(record["lts_rewards"]))
    assert record["detector_trainings"] == 2 and record["images_rendered"] == 2 * 2 * 3
    assert record["hypergradient_norm"] > 0 and set(record["seconds"]) == {"render", "train", "evaluate", "total"}
    assert np.abs(np.array(psi_of(path)["a"]["azimuth"]) - 0.25).max() > 1e-4  # ψ moved


def test_bad_configs(assets, tmp_path):
    cfg = config(assets)
    with pytest.raises(UserError, match="No radiance field"):
        BilevelRun(dataclasses.replace(cfg, fields={"a": cfg.fields["a"]}), tmp_path / "x")
    with pytest.raises(UserError, match="no lighting condition"):
        BilevelRun(dataclasses.replace(cfg, lighting=["studio"]), tmp_path / "z")
    for method in ("autosim", "lts"):
        with pytest.raises(UserError, match=f"method {method} cannot optimise the lighting"):
            BilevelRun(dataclasses.replace(cfg, method=method_config(method), factors=["azimuth", "lighting"]),
                       tmp_path / "w")
    with pytest.raises(UserError, match="elevation of ψ are to be optimised but have a single bin"):
        BilevelRun(dataclasses.replace(cfg, factors=["azimuth", "elevation"]), tmp_path / "v")
    with pytest.raises(UserError, match="source.size is 48"):
        BilevelRun(dataclasses.replace(cfg, source=SourceConfig(size=48)), tmp_path / "u")
    wide = CocoBuilder(["a", "b"])  # 48x32: the renders are square, so the width must match the height too
    (tmp_path / "wide" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((SIZE, 48, 3), np.uint8)).save(tmp_path / "wide/images/0.png")
    wide.add_annotation(wide.add_image("images/0.png", 48, SIZE), "a", [2, 2, 10, 10])
    wide.save(tmp_path / "wide" / "annotations.json")
    with pytest.raises(UserError, match="Validation images are 48x32 px; the training renders are square"):
        BilevelRun(dataclasses.replace(cfg, val=str(tmp_path / "wide"), source=SourceConfig(size=SIZE)), tmp_path / "t")
    assert not any((tmp_path / d).exists() for d in "xwvut")


def test_resume_before_the_first_checkpoint_drops_the_logged_step(assets, tmp_path):
    """A kill between logging step 0 and checkpointing it: the resumed run starts over without a second step 0."""
    cfg = config(assets, steps=1)
    BilevelRun(cfg, tmp_path / "run").run.log(0, val_loss=1.0)
    resumed = BilevelRun(cfg, tmp_path / "run", resume=True)
    assert resumed.next_step == 0 and resumed.run.metrics() == []


def test_a_detector_with_its_classes_in_another_order_is_refused(assets, tmp_path):
    from neuralsim.tasks.detector import build_from_config

    cfg = config(assets)
    runs = {}
    for order in ("ba", "ab"):
        detector = dataclasses.replace(cfg.detector, num_classes=2, category_names=list(order))
        path = save_detector(build_from_config(detector), tmp_path / order)
        runs[order] = dataclasses.replace(cfg, detector_init=str(path))
    with pytest.raises(UserError, match="the same, in the same order"):
        BilevelRun(runs["ba"], tmp_path / "run-ba")
    assert not (tmp_path / "run-ba").exists()
    assert BilevelRun(runs["ab"], tmp_path / "run-ab").model.config.category_names == ["a", "b"]


def test_nan_hypergradient_stops_and_keeps_the_last_checkpoint(assets, tmp_path, monkeypatch):
    run = BilevelRun(config(assets, steps=2), tmp_path / "nan")
    run.step(0)
    saved = (tmp_path / "nan" / "psi.json").read_text()
    monkeypatch.setattr(NSOConfig, "estimate", lambda self, psi, *a, **k: {
        n: torch.full_like(t, float("nan")) for n, t in psi.trainable().items()})
    with pytest.raises(UserError, match="not finite"):
        run.step(1)
    assert json.loads((tmp_path / "nan" / "checkpoint" / "state.json").read_text())["step"] == 0
    assert (tmp_path / "nan" / "psi.json").read_text() == saved


def test_shots_join_the_training_and_scale_the_hypergradient(assets, tmp_path, monkeypatch):
    import neuralsim.bilevel.loop as loop

    run = BilevelRun(dataclasses.replace(config(assets, steps=1), shots=str(assets / "val")), tmp_path / "shots")
    trained_on, stepped = [], []
    real_train = loop.train_detector
    monkeypatch.setattr(loop, "train_detector", lambda model, data, *a, **k: (trained_on.append(len(data)),
                                                                             real_train(model, data, *a, **k)))
    monkeypatch.setattr(NSOConfig, "estimate", lambda self, psi, *a, **k: {
        n: torch.ones_like(t) for n, t in psi.trainable().items()})
    monkeypatch.setattr(run.optimizer, "step", lambda grads: stepped.append(grads))
    run.step(0)
    rendered, shots = 2 * 3, 4
    assert trained_on == [rendered + shots]
    for g in stepped[0].values():  # ψ moves only the rendered share of L_train
        torch.testing.assert_close(g, torch.full_like(g, rendered / (rendered + shots)))


def test_shots_of_other_categories_are_refused(assets, tmp_path):
    coco = CocoBuilder(["a", "c"])
    (tmp_path / "odd" / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "odd/images/0.png")
    coco.add_annotation(coco.add_image("images/0.png", SIZE, SIZE), "c", [2, 2, 10, 10])
    coco.save(tmp_path / "odd" / "annotations.json")
    with pytest.raises(UserError, match="shots' categories"):
        BilevelRun(dataclasses.replace(config(assets), shots=str(tmp_path / "odd")), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_refuses_overrides_it_would_ignore(cli, assets, tmp_path):
    from neuralsim.runtime import RunDir, to_plain

    RunDir(tmp_path / "run", to_plain(config(assets)))  # a run begun, as its folder records it
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    r = cli("optimize", "--out", tmp_path / "run", "--resume", "--seed", "3", "method:ns")
    assert r.returncode == 2 and "only --steps may change, not method, seed" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and sorted(p.name for p in (tmp_path / "run").iterdir()) == before


def test_settings_on_the_command_line_override_the_config(cli, tmp_path):
    (tmp_path / "optimize.json").write_text(json.dumps({"fields": {"a": "f"}, "val": "v", "test": "t"}))
    r = cli("optimize", tmp_path / "optimize.json", "--out", tmp_path / "run", "--stepz", "3")
    assert r.returncode == 2 and "'--stepz 3' are not all known settings" in r.stderr, r.stderr
    r = cli("optimize", tmp_path / "optimize.json", "--help")
    assert r.returncode == 0 and "--images-per-object" in r.stdout and "method:nso" in r.stdout
    assert not (tmp_path / "run").exists()


def test_psi_objects_leaves_the_other_objects_psi_alone(assets, tmp_path):
    cfg = dataclasses.replace(config(assets, method="influence", steps=1), psi_objects=["a"])
    path = BilevelRun(cfg, tmp_path / "only-a").run_all()
    record = json.loads((path / "metrics.jsonl").read_text())
    assert set(record["hypergradient"]) == {"a/azimuth"}
    assert record["renders"]["probe_renders"] > 0 and record["psi_after"]["b"] == record["psi"]["b"]
    assert np.abs(np.subtract(record["psi_after"]["a"]["azimuth"], record["psi"]["a"]["azimuth"])).max() > 1e-3
    with pytest.raises(UserError, match=r"no distribution for object\(s\) \['c'\]"):
        BilevelRun(dataclasses.replace(cfg, psi_objects=["c"]), tmp_path / "c")
    assert not (tmp_path / "c").exists()
    with pytest.raises(UserError, match="psi_objects is empty"):
        BilevelRun(dataclasses.replace(cfg, psi_objects=[]), tmp_path / "none")


def test_single_bin_check_covers_only_the_objects_optimised(assets, tmp_path):
    """A factor with one bin blocks the run only where it is optimised: here b's elevation, not a's."""
    cfg = dataclasses.replace(config(assets), factors=["azimuth", "elevation"],
                              bins={"azimuth": 4, "elevation": 2, "radius": 1})
    psi = init_psi(PsiInit(objects=["a", "b"], bins=dict(cfg.bins), lighting=list(cfg.lighting))).to_json()
    b = psi["objects"]["b"]
    b["elevation"] = {**b["elevation"], "probs": [1.0]}
    del b["elevation"]["logits"]
    (tmp_path / "psi.json").write_text(json.dumps(psi))
    cfg = dataclasses.replace(cfg, psi=str(tmp_path / "psi.json"))
    with pytest.raises(UserError, match="elevation of ψ are to be optimised but have a single bin"):
        BilevelRun(cfg, tmp_path / "both")
    run = BilevelRun(dataclasses.replace(cfg, psi_objects=["a"]), tmp_path / "only-a")
    assert set(run.psi.trainable()) == {"a/azimuth", "a/elevation"}
