"""Wall time and peak memory per named phase of a step (`PhaseClock`), on the CPU or a GPU."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for `peak_memory_mb`: CUDA's allocator statistics, or Linux's resident high-water mark."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif _CLEAR_REFS.exists():
        with contextlib.suppress(OSError):
            _CLEAR_REFS.write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory (MiB) since the last `reset_peak_memory`, else since the process began: CUDA allocations on a
    GPU, else the resident set's high-water mark (Linux's VmHWM; elsewhere ru_maxrss, which also counts what a
    parent process held when it started this one)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PhaseClock:
    """Wall seconds and peak memory per named phase, over every entry: `with clock("render"): …`. Each entry
    starts a new memory peak, so phases must not nest. On a GPU each phase ends with a synchronisation, so
    queued kernels count where they were launched. `count` tallies work (renders) beside the time."""

    def __init__(self, device: torch.device | None = None):
        self.device = device or torch.device("cpu")
        self.seconds: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def count(self, what: str, n: int) -> None:
        self.counts[what] = self.counts.get(what, 0) + int(n)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        reset_peak_memory(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
            self.peak_mb[phase] = max(self.peak_mb.get(phase, 0.0), peak_memory_mb(self.device))
