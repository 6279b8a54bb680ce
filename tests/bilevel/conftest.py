"""Shared by the bilevel tests: the toy problem of the estimator tests (two objects, 8 azimuth bins, ψ with bin 5 at
0.8, validation views from bin 1 under the second light), and a small grid field fitted to a synthetic sphere."""

import pytest
import torch

from neuralsim.bilevel.toy import ToyProblem, toy_problem
from neuralsim.fields.grid import GridFieldConfig
from neuralsim.fit.synthetic import write_sphere_capture
from neuralsim.fit.trainer import FitConfig, fit


@pytest.fixture(scope="module")
def toy() -> ToyProblem:
    return toy_problem()


@pytest.fixture(scope="session")
def sphere_field(tmp_path_factory):
    """The folder of a grid field fitted in 60 steps to a 32 px sphere capture (16 views, one lighting: "tint_0")."""
    root = tmp_path_factory.mktemp("sphere")
    capture = write_sphere_capture(root / "capture", views=16, size=32)
    cfg = FitConfig(steps=60, rays_per_step=1024, eval_every=0, occupancy_start=1000,
                    field=GridFieldConfig(density_resolution=24, feature_resolution=12, occupancy_resolution=16))
    fit(capture, root / "field", cfg, device=torch.device("cpu"), show_progress=False)
    return root / "field"
