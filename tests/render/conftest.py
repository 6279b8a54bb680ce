"""Tiny fields made in code for renderer tests: a smooth density blob with random colour features."""

from __future__ import annotations

import pytest
import torch

from neuralsim.fields.grid import GridField, GridFieldConfig


def blob_field(dtype: torch.dtype = torch.float32, radius: float = 0.5, seed: int = 0,
               axes: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> GridField:
    """A soft ball of `radius` (density vanishes well before the box faces), 2 lighting anchors; `axes` stretch it
    along x, y, z into an ellipsoid, whose outline changes as it turns."""
    config = GridFieldConfig(density_resolution=20, feature_resolution=10, feature_channels=4, appearance_dim=3,
                             hidden_width=16, occupancy_resolution=8)
    field = GridField(config, torch.tensor([0, 0, 1, 1]), 2, seed=seed)
    with torch.no_grad():
        res = config.density_resolution
        axis = torch.linspace(-1, 1, res)
        z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
        squared = (x / axes[0]) ** 2 + (y / axes[1]) ** 2 + (z / axes[2]) ** 2
        field.density_grid.copy_((6.0 - 24.0 * (squared - radius**2).clamp(min=0) * 4 - 3.0 * squared)[None, None])
        field.appearance.embeddings.copy_(torch.randn(4, 3, generator=torch.Generator().manual_seed(seed + 5)))
    field.requires_grad_(False)
    return field.to(dtype)



@pytest.fixture
def field64() -> GridField:
    return blob_field(torch.float64)


@pytest.fixture
def field32() -> GridField:
    return blob_field(torch.float32)



@pytest.fixture
def make_field():
    """Factory of blob fields: make_field(dtype=..., seed=...)."""
    return blob_field
