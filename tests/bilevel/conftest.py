"""The toy bilevel problem shared by the estimator tests: two objects, 8 azimuth bins, ψ with bin 5 at 0.8,
validation views from bin 1 under the second light."""

import pytest

from neuralsim.bilevel.toy import ToyProblem, toy_problem


@pytest.fixture(scope="module")
def toy() -> ToyProblem:
    return toy_problem()
