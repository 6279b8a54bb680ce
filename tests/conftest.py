"""Shared fixtures: run the CLI in-process or as a subprocess, and make tiny files in code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `python -m neuralsim ARGS` in a fresh process (a Mitsuba abort cannot take pytest down)."""
    return subprocess.run([sys.executable, "-m", "neuralsim", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.fixture
def cli():
    return run_cli
