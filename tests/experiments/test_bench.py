"""`neuralsim bench` end to end at a tiny size, in a subprocess (real Mitsuba captures, fields, detector):
every (method, seed) cell runs, the report is written, a second call reuses the finished runs, and a bad
config gets one line and exit code 2."""

import json
from pathlib import Path

import pytest

from neuralsim.experiments.gaps import GAPS

pytestmark = pytest.mark.slow  # end to end through the CLI or Mitsuba: `make test-fast` leaves them out

TINY = {
    "gap": "pose", "objects": ["002_master_chef_can", "019_pitcher_base"], "biased": ["019_pitcher_base"],
    "size": 32, "capture_views": 8, "fit_steps": 20, "fit_rays": 512, "val_per_object": 2, "test_per_object": 2,
    "target_spp": 4, "methods": ["ns", "influence"], "inits": ["different"], "seeds": [0],
    "optimize": {
        "steps": 2, "images_per_object": 2, "pretrain": {"images_per_object": 4, "epochs": 1},
        "hypergradient": {"hvp_images": 2, "inverse_hvp": {"iterations": 2, "damping": 1.0}},
        "psi_optimizer": {"lr": 1.0},
        "detector": {"backbone": "resnet18", "fpn_channels": 16, "head_activation": "silu"},
        "train": {"epochs": 1, "batch_size": 2, "trainable": "heads", "warmup_steps": 1},
    },
}


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    (root / "bench.json").write_text(json.dumps(TINY))
    return root


def test_bench_runs_every_cell_writes_the_report_and_reuses_finished_runs(cli, tiny_bench):
    root = tiny_bench
    r = cli("bench", root / "bench.json", "--out", root / "out", "--cache", root / "cache", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-3000:]
    out = root / "out"
    assert (out / "report.html").is_file()
    table = (out / "summary.md").read_text().splitlines()
    assert [line.split(" | ")[1:4] for line in table[2:]] == [["ns", "1", "2"], ["influence", "1", "2"]]
    for method in ("ns", "influence"):
        lines = (out / "runs" / f"different-{method}-s0" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == [0, 1]
    first = [json.loads(line) for line in (out / "runs/different-influence-s0/metrics.jsonl").read_text().splitlines()]
    psi0, psi_end = first[0]["psi"]["019_pitcher_base"]["azimuth"], first[-1]["psi_after"]["019_pitcher_base"]["azimuth"]
    assert psi0[GAPS["pose"].different_bin] == pytest.approx(0.8)
    assert psi_end != pytest.approx(psi0)  # influence moved ψ
    ns = [json.loads(line) for line in (out / "runs/different-ns-s0/metrics.jsonl").read_text().splitlines()]
    assert ns[-1]["psi_after"] == ns[0]["psi"]  # ns never does
    # The detector was pre-trained on ψ₀ (cached once per initialisation), not on uniform data.
    assert [p.name.split("-")[1] for p in (root / "cache" / "detectors").iterdir()] == ["different"]
    stamp = (out / "runs/different-ns-s0/metrics.jsonl").stat().st_mtime_ns
    # called again with a relative --out: the same runs, found and reused
    r = cli("bench", "bench.json", "--out", "out", "--cache", root / "cache", "--device", "cpu", cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "runs/different-ns-s0/metrics.jsonl").stat().st_mtime_ns == stamp  # finished runs are reused


def test_bench_retrains_each_runs_psi_from_scratch_against_psi0_on_the_same_draws(cli, tiny_bench):
    root = tiny_bench
    (root / "retrain.json").write_text(json.dumps(TINY | {"retrain_per_object": 2, "retrain_epochs": 1}))
    args = ("bench", root / "retrain.json", "--out", root / "out", "--cache", root / "cache", "--device", "cpu")
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    out = root / "out"
    assert len((out / "runs/different-influence-s0/metrics.jsonl").read_text().splitlines()) == 2  # runs reused
    # NS's data is ψ₀'s: one control per seed, one retraining per method that moves ψ
    assert sorted(p.name for p in (out / "retrain").iterdir()) == ["different-influence-s0.json", "different-psi0-s0.json"]
    control, learned = (json.loads((out / "retrain" / f"different-{m}-s0.json").read_text()) for m in ("psi0", "influence"))
    assert control["spec"]["psi"] != learned["spec"]["psi"] and 0.0 <= learned["ap"] <= 1.0
    table = (out / "summary.md").read_text().split("Retrained from scratch")[1].splitlines()
    rows = [line.split(" | ") for line in table if line.startswith("| different")]
    assert [row[1:3] for row in rows] == [["ns = ψ₀", "1"], ["influence", "1"]]
    gain = 100 * (learned["ap"] - control["ap"])
    assert rows[1][6] == f"{gain:+.1f} ({int(gain > 0)} of 1)"  # the paired gain in AP all
    assert "trained from scratch" in (out / "report.html").read_text()
    stamp = (out / "retrain/different-influence-s0.json").stat().st_mtime_ns
    assert cli(*args).returncode == 0
    assert (out / "retrain/different-influence-s0.json").stat().st_mtime_ns == stamp  # a finished retraining is reused


def test_substitution_renders_the_same_placements_twice_and_scores_both(cli, tiny_bench):
    root = tiny_bench
    r = cli("substitution", root / "bench.json", "--out", root / "sub", "--cache", root / "cache", "--device", "cpu",
            "--per-object", "3", "--epochs", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((root / "sub" / "result.json").read_text())
    assert [run["source"] for run in result["runs"]] == ["ground_truth", "field"]
    assert all(0.0 <= run["ap"] <= 1.0 for run in result["runs"])
    # the field twins are labelled from their own alpha, at the ground truth's placements
    assert result["box_iou"] > 0.5
    assert "field" in (root / "sub" / "summary.md").read_text()


@pytest.mark.parametrize("change,words", [
    ({"optimize": TINY["optimize"] | {"steps": 0}}, "steps, images_per_object and batch_size must be at least 1"),
    ({"methods": ["nso", "magic"]}, "methods[1]"), ({"fit_steps": 0}, "must be at least 1"),
    ({"gap": "weather"}, "Unknown gap"), ({"biased": ["025_mug"]}, "must be among the objects"),
    ({"colour": 3}, "colour"), ({"optimize": TINY["optimize"] | {"detector": 3}}, "optimize.detector"),
    ({"gap": "illumination", "methods": ["autosim"]}, "autosim and lts cannot"),
    ({"seeds": [-1]}, "must be ≥ 0"), ({"seeds": [True]}, "seeds[0]"),
    ({"seeds": ["0"]}, "seeds[0]"), ({"inits": []}, "no ψ initialisation"), ({"methods": ["ns", "ns"]}, "at most once"),
    ({"psi_objects": "some"}, "psi_objects"), (
        {"optimize": TINY["optimize"] | {"hypergradient": {"hvp_images": "many"}}}, "optimize.hypergradient.hvp_images"),
    ({"retrain_per_object": -1}, "retrain_per_object must be ≥ 0"), ({"retrain_epochs": 0}, "must be at least 1"),
    ({"target_bin": 8}, "bin index from 0 to 7"), ({"gap": "illumination", "target_bin": "fog"},
                                                   "not a lighting condition"),
    ({"different_bin": 0}, "would be the \"same\" one"),
    ({"gap": "illumination", "lighting": ["studio", "fog"]}, "Unknown lighting"),
    ({"gap": "illumination", "lighting": ["studio", "studio"]}, "name one condition twice"),
    ({"gap": "illumination", "lighting": ["low_light"], "target_bin": "low_light"}, "at least two lighting"),
    ({"gap": "illumination", "lighting": ["studio", "low_light"]}, "leave out 'dim_top'"),
])
def test_bad_bench_config_gives_one_line_and_exit_code_2(cli, tmp_path, change, words):
    (tmp_path / "bench.json").write_text(json.dumps(TINY | change))
    r = cli("bench", tmp_path / "bench.json", "--out", tmp_path / "out", "--cache", tmp_path / "cache")
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists()


def test_bench_refuses_a_folder_holding_a_bench_of_other_settings_before_writing(cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "bench.json").write_text(json.dumps({"bench": TINY | {"cache": str(tmp_path / "cache")}}))
    before = (out / "bench.json").read_text()
    other = TINY | {"seeds": [1], "optimize": TINY["optimize"] | {"psi_optimizer": {"lr": 2.0}}}
    (tmp_path / "bench.json").write_text(json.dumps(other))
    r = cli("bench", tmp_path / "bench.json", "--out", out, "--cache", tmp_path / "cache", "--device", "cpu")
    assert r.returncode == 2 and "other settings (optimize differ)" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (out / "bench.json").read_text() == before and sorted(p.name for p in out.iterdir()) == ["bench.json"]
    assert not (tmp_path / "cache").exists()  # refused before any preparation


def test_ycb21_takes_every_object_and_its_table_pools_them():
    from neuralsim.assets.catalog import builtin_names
    from neuralsim.experiments.bench_report import markdown_table
    from neuralsim.experiments.recipes import load_bench_config

    bench = load_bench_config("ycb21")
    assert bench.objects == bench.biased == builtin_names() and len(bench.objects) == 21
    rows = [{"init": "different", "method": method, "steps": 12 + i, "test_ap": 0.3, "val_loss_first": 1.0,
             "val_loss": 0.9} | ({"test_loss_first": 1.25, "test_loss": 1.125} if method == "influence" else {})
            | {f"{key}/{obj}": value * (k + 1) / 21 for k, obj in enumerate(bench.biased)
               for key, value in (("ap_first", 0.1), ("ap", 0.2), ("tv_first", 0.9), ("tv_last", 0.5))}
            for i, method in enumerate(("ns", "ns", "influence"))]
    table = markdown_table({"rows": rows, "biased": bench.biased}).splitlines()
    assert len(table[0].split(" | ")) == 4 + 2 + 3  # one AP and one TV column for all 21 objects
    assert table[2].endswith("| — |") and table[3].endswith("| 1.250 → 1.125 |")  # runs without a test loss: —
    assert table[2].split(" | ")[1:4] == ["ns", "2", "12–13"]  # two ns runs, one of them a step short
    # the mean over objects of value·(k+1)/21 for k < 21 is value·11/21
    assert f"{100 * 0.1 * 11 / 21:.1f} → {100 * 0.2 * 11 / 21:.1f}" in table[3]


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "benchmarks" / "configs").glob("*.json")),
                         ids=lambda p: p.stem)
def test_every_shipped_bench_config_loads_and_validates(path):
    """The configs that docs/RESULTS.md's commands name stay readable as the settings evolve."""
    from neuralsim.experiments.recipes import load_bench_config

    bench = load_bench_config(str(path))
    stored = json.loads(path.read_text())
    assert bench.objects == stored["objects"] and bench.gap == stored["gap"]


def test_a_benchmark_scripts_bench_comes_from_its_config_else_the_demo_or_the_gaps_recipe(tmp_path):
    from neuralsim.experiments.cli import script_bench

    config = sorted((Path(__file__).parents[2] / "benchmarks" / "configs").glob("*.json"))[0]
    stored = json.loads(config.read_text())
    from_file = script_bench(str(config), "zoom", demo=True, cache=str(tmp_path))
    assert (from_file.gap, from_file.objects, from_file.cache) == (stored["gap"], stored["objects"], str(tmp_path))
    demo = script_bench(None, "zoom", demo=True)
    assert (demo.gap, len(demo.objects), demo.size, demo.optimize.steps) == ("zoom", 4, 64, 12)
    assert [m.method for m in demo.methods] == ["ns", "influence"]
    assert len(script_bench(None, "ycb21").objects) == 21  # the gap's own objects, not the paper's six
    dark = script_bench(None, "illumination", demo=True).gap_spec  # the demo's illumination gap: the dark room
    assert (dark.lighting[dark.target_bin], dark.lighting[dark.different_bin], dark.k) == ("low_light", "studio", 5)


def test_summary_takes_the_benchs_own_biased_objects_and_keeps_a_diverged_loss_visible(tmp_path):
    from neuralsim.experiments.bench_report import summarise

    objects, uniform = ["002_master_chef_can", "025_mug"], [1 / 8] * 8
    (tmp_path / "bench.json").write_text(json.dumps({"bench": TINY | {"objects": objects, "biased": ["025_mug"]}}))
    run = tmp_path / "runs" / "different-ns-s0"
    run.mkdir(parents=True)
    steps = [{"step": t, "val_loss": 0.5 if t < 2 else None, "test_ap": 0.2, "test_ap50": 0.4, "detector_trainings": 1,
              "images_rendered": 4, "seconds": {"total": 1.0},
              "per_class": {o: {"ap": 0.1, "ap50": 0.3} for o in objects},
              "psi": {o: {"azimuth": uniform} for o in objects},
              "psi_after": {o: {"azimuth": uniform} for o in objects}} for t in range(3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in steps))
    (row,) = summarise(tmp_path)["rows"]
    assert row["tv_last/025_mug"] == pytest.approx(7 / 8)  # its target is the pose gap's one bin, not uniform
    assert row["val_loss"] != row["val_loss"]  # NaN: the last step's loss diverged (logged null), not 0


@pytest.mark.parametrize("psi_objects,expected", [("all", None), ("biased", ["019_pitcher_base"])])
def test_psi_objects_biased_hands_the_runs_only_the_biased_objects(tmp_path, psi_objects, expected):
    from neuralsim.experiments.bench import run_config
    from neuralsim.experiments.prepare import Prepared
    from neuralsim.experiments.recipes import load_bench_config

    (tmp_path / "bench.json").write_text(json.dumps(TINY | {"psi_objects": psi_objects}))
    bench = load_bench_config(str(tmp_path / "bench.json"))
    objects = {o: str(tmp_path / o) for o in bench.objects}
    prepared = Prepared(fields=objects, val="val", test="test", detectors={"different": "det"})
    assert run_config(bench, prepared, "different", "influence", 0, tmp_path / "psi.json").psi_objects == expected


def test_a_bench_may_name_its_own_target_and_different_bins():
    from neuralsim.experiments.gaps import target_probs
    from neuralsim.experiments.prepare import initial_psi
    from neuralsim.experiments.recipes import BenchConfig

    bench = BenchConfig(gap="illumination", objects=TINY["objects"], biased=TINY["biased"], target_bin="warm_left",
                        different_bin="cool_right")
    bench.validate()
    gap = bench.gap_spec
    names = list(gap.lighting)
    assert list(target_probs(gap, "019_pitcher_base")) == [float(n == "warm_left") for n in names]
    weights = initial_psi(gap, "different").objects["019_pitcher_base"].lighting.weights().detach()
    assert names[int(weights.argmax())] == "cool_right" and float(weights.max()) == pytest.approx(0.8)
    assert BenchConfig(gap="zoom", target_bin=2).gap_spec.target_bin == 2  # indices on the binned gaps


def test_a_bench_may_name_its_own_lighting_conditions():
    from neuralsim.experiments.gaps import target_probs
    from neuralsim.experiments.prepare import initial_psi
    from neuralsim.experiments.recipes import BenchConfig

    lighting = ["studio", "low_light", "dim_top"]
    gap = BenchConfig(gap="illumination", objects=TINY["objects"], biased=TINY["biased"], lighting=lighting).gap_spec
    assert (gap.k, gap.lighting) == (3, tuple(lighting))  # the conditions are the bins, in the bench's order
    assert list(target_probs(gap, "019_pitcher_base")) == [0.0, 0.0, 1.0]  # the gap's own target, dim_top, by name
    psi = initial_psi(gap, "different")
    assert psi.lighting_names() == lighting
    assert list(psi.objects["019_pitcher_base"].lighting.weights().detach()) == pytest.approx([0.8, 0.1, 0.1])
    pose = BenchConfig(gap="pose", lighting=["studio", "low_light"]).gap_spec  # elsewhere: drawn uniformly
    assert (pose.k, initial_psi(pose, "same").lighting_names()) == (8, ["studio", "low_light"])


@pytest.mark.parametrize("target_bin,tv", [(None, 1.0), (3, 0.0)])
def test_the_summary_measures_tv_against_the_benchs_own_target_bin(tmp_path, target_bin, tv):
    from neuralsim.experiments.bench_report import summarise

    objects, at3 = ["002_master_chef_can", "025_mug"], [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    bench = TINY | {"objects": objects, "biased": ["025_mug"], "target_bin": target_bin}
    (tmp_path / "bench.json").write_text(json.dumps({"bench": bench}))
    run = tmp_path / "runs" / "different-ns-s0"
    run.mkdir(parents=True)
    step = {"step": 0, "val_loss": 0.5, "test_ap": 0.2, "test_ap50": 0.4, "detector_trainings": 1,
            "images_rendered": 4, "seconds": {"total": 1.0}, "per_class": {o: {"ap": 0.1, "ap50": 0.3} for o in objects},
            "psi": {o: {"azimuth": at3} for o in objects}, "psi_after": {o: {"azimuth": at3} for o in objects}}
    (run / "metrics.jsonl").write_text(json.dumps(step) + "\n")
    (row,) = summarise(tmp_path)["rows"]
    assert row["tv_last/025_mug"] == pytest.approx(tv)


def test_any_bench_setting_may_be_given_on_the_command_line():
    from neuralsim.experiments.recipes import BenchConfig, demo
    from neuralsim.schema import from_args

    bench = from_args(BenchConfig, demo("zoom"), ["--optimize.psi-optimizer.lr", "2", "--retrain-per-object", "8"], "p")
    assert (bench.optimize.psi_optimizer.lr, bench.retrain_per_object) == (2.0, 8)
    assert bench.optimize.steps == demo("zoom").optimize.steps  # the rest stays as the preset has it
