"""A bench on Ray (a local Ray of 2 CPUs) writes the bytes a serial bench writes, runs its cells side by side,
survives a worker killed mid-run, and a cluster address where nothing listens is one clear line, at once."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from neuralsim.distributed import RayExecutor, Serial
from neuralsim.errors import UserError

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

TINY = {  # the tiny bench of tests/experiments/test_bench.py, with a retraining
    "gap": "pose", "objects": ["002_master_chef_can", "019_pitcher_base"], "biased": ["019_pitcher_base"],
    "size": 32, "capture_views": 8, "fit_steps": 20, "fit_rays": 512, "val_per_object": 2, "test_per_object": 2,
    "target_spp": 4, "methods": ["ns", "influence"], "inits": ["different"], "seeds": [0],
    "retrain_per_object": 2, "retrain_epochs": 1,
    "optimize": {
        "steps": 2, "images_per_object": 2, "pretrain": {"images_per_object": 4, "epochs": 1},
        "hypergradient": {"hvp_images": 2, "inverse_hvp": {"iterations": 2, "damping": 1.0}},
        "psi_optimizer": {"lr": 1.0},
        "detector": {"backbone": "resnet18", "fpn_channels": 16, "head_activation": "silu"},
        "train": {"epochs": 1, "batch_size": 2, "trainable": "heads", "warmup_steps": 1},
    },
}

MEASURED = {"time", "seconds", "train_seconds", "peak_memory_mb", "peak_memory_mb_by_phase"}
"""What a piece measures rather than computes: wall-clock times, durations and its process's peak memory."""

TIMED = {"metrics.jsonl", "summary.json", "field.json", "eval.json"}
"""Files that hold `MEASURED` values (each step's time, seconds and memory; a field's fitting seconds): compared
without them. The report shows the seconds, a field's train_state.safetensors records its fitting seconds, and
TensorBoard's event files name the host and hold times: those are left out. Every other file is compared byte for
byte, but for the temporary file of an atomic write that a kill cut short (`.NAME.XXXX.tmp`, never read)."""


def _without_measures(data):
    if isinstance(data, dict):
        return {k: _without_measures(v) for k, v in data.items() if k not in MEASURED}
    if isinstance(data, list):
        return [_without_measures(v) for v in data]
    return data


def deterministic_files(root: Path) -> dict[str, bytes]:
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        temporary = path.name.startswith(".") and path.name.endswith(".tmp")
        if not path.is_file() or temporary or "tensorboard" in rel.parts or path.name in (
                "report.html", "train_state.safetensors"):
            continue
        if path.name in TIMED:
            lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
            files[str(rel)] = json.dumps([_without_measures(json.loads(line)) for line in lines]).encode()
        else:
            files[str(rel)] = path.read_bytes()
    return files


def assert_same_files(got: Path, expected: Path) -> None:
    a, b = deterministic_files(got), deterministic_files(expected)
    assert sorted(a) == sorted(b)
    assert [name for name in a if a[name] != b[name]] == []


def tiny_bench(cache: Path):
    from neuralsim.experiments.recipes import bench_from_plain

    return bench_from_plain(TINY | {"cache": str(cache)}, "tiny bench")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def serial_bench(tmp_path_factory):
    """The tiny bench run here, one piece after another, moved aside: serial-out/ and serial-cache/. The Ray runs
    then write to the same out/ and cache/ paths, which the files name."""
    from neuralsim.experiments.bench import run_bench

    root = tmp_path_factory.mktemp("distributed")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each Ray task (a module fixture runs before the tests' own one-thread fixture)
    try:
        run_bench(tiny_bench(root / "cache"), root / "out", log=lambda line: None, executor=Serial())
    finally:
        torch.set_num_threads(threads)
    (root / "out").rename(root / "serial-out")
    (root / "cache").rename(root / "serial-cache")
    return root


def test_a_bench_on_ray_writes_the_serial_bytes_and_runs_its_cells_side_by_side(local_ray, serial_bench):
    from neuralsim.experiments.bench import run_bench

    root = serial_bench
    shutil.rmtree(root / "out", ignore_errors=True)
    shutil.rmtree(root / "cache", ignore_errors=True)  # the fields and sets made on Ray too
    lines = []
    executor = RayExecutor()
    run_bench(tiny_bench(root / "cache"), root / "out", log=lines.append, executor=executor)
    assert_same_files(root / "out", root / "serial-out")
    assert_same_files(root / "cache", root / "serial-cache")
    names = [span.name for span in executor.spans]
    assert sorted(n.split(":")[0] for n in names) == ["capture and field"] * 2 + ["detector pre-trained on field "
                                                                                  "renders from ψ₀ = different"] \
        + ["ground-truth test set", "ground-truth val set", "retrain from scratch", "run", "run"]
    cells = [span for span in executor.spans if span.name.startswith("run:")]
    assert max(s.start for s in cells) < min(s.end for s in cells)  # the two runs overlapped
    assert len({s.pid for s in cells}) == 2
    assert any("done on" in line for line in lines)
    assert (root / "out" / "report.html").is_file()


def test_a_run_whose_worker_is_killed_is_retried_to_the_same_bytes(local_ray, serial_bench):
    from neuralsim.experiments.bench import run_bench

    root = serial_bench
    if not (root / "cache").is_dir():
        shutil.copytree(root / "serial-cache", root / "cache")
    shutil.rmtree(root / "out", ignore_errors=True)
    shutil.copytree(root / "serial-out", root / "out")
    cell = root / "out" / "runs" / "different-influence-s0"
    shutil.rmtree(cell)  # the influence run and its retraining are done again, and killed once
    (root / "out" / "retrain" / "different-influence-s0.json").unlink()
    marker = root / "killed"

    class KillOnce(RayExecutor):
        def map_unordered(self, fn, items, **kw):
            def piece(item):  # pickled by value: the worker cannot import this test module
                import os
                import signal
                import threading
                import time

                out = getattr(item, "out", None)
                if out is not None and out.name == cell.name:
                    try:  # the first try only
                        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    except FileExistsError:
                        pass
                    else:
                        os.write(fd, str(os.getpid()).encode())
                        os.close(fd)

                        def kill():  # mid-run: once its first outer step is logged
                            while not (out / "metrics.jsonl").is_file():
                                time.sleep(0.01)
                            os.kill(os.getpid(), signal.SIGKILL)

                        threading.Thread(target=kill, daemon=True).start()
                return fn(item)

            return super().map_unordered(piece, items, **kw)

    executor = KillOnce()
    run_bench(tiny_bench(root / "cache"), root / "out", log=lambda line: None, executor=executor)
    (span,) = [s for s in executor.spans if "method influence" in s.name]
    assert span.pid != int(marker.read_text())  # done by another worker than the one killed
    assert_same_files(root / "out", root / "serial-out")
    metrics = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1]  # a step logged before the kill is not logged twice


def test_learn_on_ray_writes_the_serial_bytes(local_ray, tmp_path, monkeypatch):
    """`learn` with two built-in objects (captured and fitted as pieces) and two judged seeds (four pieces)."""
    import importlib.util

    from neuralsim.learn.pipeline import Learn
    from neuralsim.learn.project import load_project

    spec = importlib.util.spec_from_file_location("learn_tests", Path(__file__).parent / "learn" / "test_learn.py")
    learn_tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(learn_tests)  # its photos and its tiny settings
    learn_tests.write_photos(tmp_path / "photos")
    project = {"objects": [{"source": "002_master_chef_can", "name": "a"}, {"source": "019_pitcher_base", "name": "b"}],
               "photos": {"coco": "photos/annotations.json"}, **learn_tests.TINY, "cache": str(tmp_path / "cache"),
               "prepare": {"views": 8, "capture_size": 32, "fit_steps": 20, "fit_rays": 512,
                           "lighting": ["studio", "dim_top"]}}
    (tmp_path / "project.json").write_text(json.dumps(project))
    monkeypatch.chdir(tmp_path)
    Learn(load_project(tmp_path / "project.json"), Path("out"), log=lambda line: None).run()
    (tmp_path / "out").rename(tmp_path / "serial-out")
    (tmp_path / "cache").rename(tmp_path / "serial-cache")
    executor = RayExecutor()
    Learn(load_project(tmp_path / "project.json"), Path("out"), log=lambda line: None, executor=executor).run()
    (tmp_path / "out" / "stages.json").unlink()  # seconds per stage
    (tmp_path / "serial-out" / "stages.json").unlink()
    assert_same_files(tmp_path / "out", tmp_path / "serial-out")
    assert_same_files(tmp_path / "cache", tmp_path / "serial-cache")
    assert sorted(s.name.split(":")[0].strip() for s in executor.spans) == ["field of 002_master_chef_can",
                                                                           "field of 019_pitcher_base"] + ["judge"] * 4


def test_a_cluster_address_where_nothing_listens_is_one_clear_line_at_once(tmp_path):
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"No Ray cluster answers at 127\.0\.0\.1:9 .*ray start --head"):
        with RayExecutor("127.0.0.1:9"):
            pass
    assert time.perf_counter() - start < 10
    (tmp_path / "bench.json").write_text(json.dumps(TINY))
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "neuralsim", "bench", str(tmp_path / "bench.json"), "--out",
                        str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--ray", "ray://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, RAY_ADDRESS=""))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "No Ray cluster answers at ray://127.0.0.1:9" in r.stderr and "ray start --head" in r.stderr
    assert time.perf_counter() - start < 60
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_a_worker_that_cannot_see_an_input_names_itself_and_the_path(local_ray, tmp_path):
    with pytest.raises(UserError, match=r"worker .* cannot see .*nowhere: put the output folder and the cache on "
                                        "storage every node mounts"):
        list(RayExecutor().map_unordered(str, [1], needs=lambda item: [tmp_path / "nowhere"]))


def test_the_command_line_imports_no_ray():
    code = "import sys, neuralsim.cli; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
