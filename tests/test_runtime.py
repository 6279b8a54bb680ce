import json
import re
import time
from pathlib import Path

import pytest
import torch

from neuralsim import __version__, runtime
from neuralsim.cli import main
from neuralsim.clock import PhaseClock, peak_memory_mb, reset_peak_memory
from neuralsim.errors import UserError
from neuralsim.runtime import (
    RunDir,
    atomic_write_json,
    derive_seed,
    file_stem,
    resolve_device,
    safe_name,
    staged_output_dir,
)


def test_staged_output_dir_commits_on_success_and_cleans_up_on_failure(tmp_path):
    with staged_output_dir(tmp_path / "out") as stage:
        (stage / "a.txt").write_text("x")
        assert not (tmp_path / "out").exists()
    assert (tmp_path / "out" / "a.txt").read_text() == "x"
    with pytest.raises(RuntimeError):
        with staged_output_dir(tmp_path / "out2") as stage:
            (stage / "partial").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(UserError, match="already holds files"):
        with staged_output_dir(tmp_path / "out"):
            pass
    with staged_output_dir(tmp_path / "out", overwrite=True) as stage:
        (stage / "b.txt").write_text("y")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.txt"]


def test_staged_output_folders_take_the_permissions_of_the_umask(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_UMASK", 0o022)
    with staged_output_dir(tmp_path / "out") as stage:
        (stage / "a.txt").write_text("x")
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_run_dir_records_its_version_and_refuses_to_resume_another(tmp_path):
    RunDir(tmp_path / "run", {"lr": 0.1}).close()
    assert json.loads((tmp_path / "run" / "neuralsim.json").read_text()) == {"version": __version__}
    RunDir(tmp_path / "run", resume=True).close()
    (tmp_path / "run" / "neuralsim.json").write_text(json.dumps({"version": "0.0.1", "later": True}))
    with pytest.raises(UserError, match=f"^Cannot resume: {tmp_path / 'run'} was written by neuralsim 0.0.1, this is "
                                        rf"neuralsim {__version__}; start the run again with --overwrite\.$"):
        RunDir(tmp_path / "run", resume=True)
    (tmp_path / "run" / "neuralsim.json").unlink()
    with pytest.raises(UserError, match="was written by a neuralsim that recorded no version"):
        RunDir(tmp_path / "run", resume=True)


@pytest.mark.parametrize("name", ["val", "019_pitcher_base", "v1.2-b"])
def test_plain_names_pass(name):
    assert safe_name(name, "name") == name == file_stem(name)


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "..", "", "a b", "a\\b", "ψ"])
def test_names_that_are_no_plain_file_names_are_refused_or_mapped(name):
    with pytest.raises(UserError, match=f"^name: expected a plain name .*, got {re.escape(repr(name))}$"):
        safe_name(name, "name")
    stem = file_stem(name)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", stem) and "/" not in stem
    assert file_stem(name + "_") != stem


def test_run_dir_logs_metrics_and_resumes(tmp_path):
    run = RunDir(tmp_path / "run", {"lr": 0.1, "path": tmp_path})
    run.log(0, loss=1.5, psi={"pitcher": [0.5, 0.5]})
    run.log(1, loss=1.0)
    run.close()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 0.1
    assert [m["loss"] for m in run.metrics()] == [1.5, 1.0]
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    resumed = RunDir(tmp_path / "run", resume=True)
    resumed.truncate_metrics(0)
    assert [m["step"] for m in resumed.metrics()] == [0]
    with pytest.raises(UserError, match="Cannot resume"):
        RunDir(tmp_path / "nothing", resume=True)


def test_atomic_json_handles_tensors_and_nan(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"t": torch.tensor([1.0, 2.0]), "nan": float("nan")})
    assert json.loads((tmp_path / "x.json").read_text()) == {"t": [1.0, 2.0], "nan": None}


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed(0, "a", 1) == derive_seed(0, "a", 1)
    assert derive_seed(0, "a", 1) != derive_seed(0, "a", 2) != derive_seed(1, "a", 1)


def test_phase_clock_sums_each_phase_over_its_entries_even_when_one_fails():
    clock = PhaseClock()
    for _ in range(2):
        with clock("a"):
            time.sleep(0.01)
    with pytest.raises(RuntimeError), clock("b"):
        time.sleep(0.01)
        raise RuntimeError("boom")
    assert set(clock.seconds) == {"a", "b"}
    assert clock.seconds["a"] >= 0.02 and clock.seconds["b"] >= 0.01


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="resettable peaks need Linux's /proc")
def test_peak_memory_follows_an_allocation_and_restarts_after_a_reset():
    import mmap

    cpu = torch.device("cpu")
    reset_peak_memory(cpu)
    before = peak_memory_mb(cpu)
    # 128 MiB of fresh pages, touched: an anonymous mapping of its own, so that no free memory the process already
    # holds (a tensor allocator's or malloc's, after the tests before this one) can serve it unseen.
    block = mmap.mmap(-1, 128 * 2**20)
    block.write(b"\1" * len(block))
    with_block = peak_memory_mb(cpu)
    assert with_block >= before + 100
    block.close()
    reset_peak_memory(cpu)
    assert peak_memory_mb(cpu) <= with_block - 100


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError):
        resolve_device("tpu")


def test_cli_turns_user_errors_into_exit_code_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["capture", "not_an_object", "--out", "/nonexistent/x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown object") and len(err.strip().splitlines()) == 1
