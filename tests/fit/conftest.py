"""One torch thread for these tests: on the shared 2-core machine, OpenMP threads that wait for a busy
core make small-tensor code many times slower (measured: 4.5 s with 1 thread against 93 s with 2)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
