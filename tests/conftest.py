"""Shared fixtures: run the CLI in-process or as a subprocess, and make tiny files in code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neuralsim.runtime import make_deterministic

make_deterministic()  # as every command does


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m neuralsim ARGS` in a fresh process (a Mitsuba abort cannot take pytest down)."""
    return subprocess.run([sys.executable, "-m", "neuralsim", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread in every test: the tensors are tiny, and on a busy 2-core machine OpenMP threads that
    wait for a core make them many times slower (measured: a 100-step fit 4.5 s with 1 thread, 93 s with 2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
