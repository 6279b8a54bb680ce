"""The toy bilevel problem shared by the estimator tests: two objects, 8 azimuth bins, ψ with bin 5 at 0.8,
validation views from bin 1 under the second light."""

import pytest
import torch

from neuralsim.bilevel.toy import ToyProblem, toy_problem


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The toy's tensors are tiny: one thread avoids a 100× slowdown from thread wake-ups on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def toy() -> ToyProblem:
    return toy_problem()
