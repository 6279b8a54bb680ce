"""The fast grid field (DVGO style): a dense density grid, a low-resolution feature grid, a small colour
MLP on view direction and NeRF-W appearance, and an occupancy grid for empty-space skipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuralsim.fields.base import AppearanceTable, Field
from neuralsim.fields.occupancy import cell_maxima, dilate, lookup, occupied_bounds

DIRECTION_FREQUENCIES = 2  # sin/cos of the view direction at 1× and 2×


@dataclass
class GridFieldConfig:
    density_resolution: int = 96
    """Vertices per axis of the density grid over [-1, 1]³."""
    feature_resolution: int = 48
    """Vertices per axis of the colour-feature grid."""
    feature_channels: int = 16
    """Channels of the colour-feature grid (with the 16-d embeddings: enough capacity for several lighting
    conditions; the comparison with 12 and 8 is in docs/notebook/)."""
    appearance_dim: int = 16
    """Length of each NeRF-W appearance embedding."""
    hidden_width: int = 64
    """Width of the two hidden layers of the colour MLP."""
    occupancy_resolution: int = 64
    """Cells per axis of the occupancy grid used to skip empty space."""
    initial_alpha: float = 1e-2
    """Opacity of one sample step of the untrained field (sets the density activation's shift)."""
    step_ratio: float = 0.5
    """Sample spacing along rays as a fraction of one density voxel."""


def _sample(volume: Tensor, points: Tensor) -> Tensor:
    """Trilinear samples (N, C) of `volume` (1, C, D, H, W) at points (N, 3) in [-1, 1]³ (x → W, z → D)."""
    n = points.shape[0]
    out = F.grid_sample(volume, points.reshape(1, 1, 1, n, 3).to(volume.dtype), mode="bilinear", align_corners=True)
    return out.reshape(volume.shape[1], n).T  # (N, C)


def squared_gradient(volume: Tensor, spacing: float) -> Tensor:
    """Σ over the axes D, H, W of the mean squared forward difference quotient of `volume` (1, C, D, H, W)."""
    return _SquaredDifferences.apply(volume) / spacing**2


class _SquaredDifferences(torch.autograd.Function):
    """Σ over the axes D, H, W of the mean squared forward difference, with a hand-written backward (half the time of
    autograd's: each step of a fit pays it on the full grids)."""

    @staticmethod
    def forward(ctx, volume: Tensor) -> Tensor:
        ctx.save_for_backward(volume)
        return sum(volume.diff(dim=axis).square().mean() for axis in (2, 3, 4))

    @staticmethod
    def backward(ctx, upstream: Tensor) -> Tensor:
        (volume,) = ctx.saved_tensors
        grad = torch.zeros_like(volume)
        for axis in (2, 3, 4):
            difference = volume.diff(dim=axis)
            difference = difference * (2.0 / difference.numel())
            n = volume.shape[axis] - 1
            grad.narrow(axis, 1, n).add_(difference)
            grad.narrow(axis, 0, n).sub_(difference)
        return grad * upstream


def encode_direction(dirs: Tensor) -> Tensor:
    """(N, 3 + 6·F): the unit direction and its sin/cos at F octaves."""
    scaled = torch.cat([dirs * (2.0**k) for k in range(DIRECTION_FREQUENCIES)], dim=-1)  # (N, 3F)
    return torch.cat([dirs, torch.sin(scaled), torch.cos(scaled)], dim=-1)


class GridField(Field):
    """Dense voxel grids in [-1, 1]³; density σ = softplus(grid + shift) / voxel size."""

    kind = "grid"

    def __init__(self, config: GridFieldConfig, image_appearance_ids: Tensor, num_appearances: int, seed: int = 0,
                 appearance_names: list[str] | None = None):
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        d, f = config.density_resolution, config.feature_resolution
        self.density_grid = nn.Parameter(torch.zeros(1, 1, d, d, d))
        self.feature_grid = nn.Parameter(0.1 * torch.randn(1, config.feature_channels, f, f, f, generator=generator))
        self.appearance = AppearanceTable(image_appearance_ids, config.appearance_dim, num_appearances, seed=seed + 1,
                                          names=appearance_names)
        width = config.hidden_width
        in_dim = config.feature_channels + 3 + 6 * DIRECTION_FREQUENCIES + config.appearance_dim
        self.colour_mlp = nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                        nn.Linear(width, 3))
        with torch.no_grad():
            for layer in self.colour_mlp:
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.uniform_(-bound, bound, generator=generator)
        r = config.occupancy_resolution
        self.register_buffer("occupancy", torch.ones(r, r, r, dtype=torch.bool))
        # DVGO parameterisation: σ = softplus(grid + shift) / voxel, so that one unit of the grid is one unit
        # of optical depth per voxel; softplus(shift)·step_ratio = −log(1 − initial_alpha).
        target = -math.log(1.0 - config.initial_alpha) / config.step_ratio
        self.density_shift = math.log(math.expm1(target))

    @property
    def voxel_size(self) -> float:
        return 2.0 / (self.config.density_resolution - 1)

    @property
    def step_size(self) -> float:
        return self.config.step_ratio * self.voxel_size

    def density(self, points: Tensor) -> Tensor:
        """σ, faded to 0 across the cells around the occupied ones, where the renderer stops skipping: a sample
        crossing into a skipped cell then loses nothing, and renders stay continuous in the camera pose (a hard
        cut would drop the fitted fog of the margin cells in steps no pose gradient sees)."""
        return self._raw_density(points) * self._fade(points)

    def _raw_density(self, points: Tensor) -> Tensor:
        return F.softplus(_sample(self.density_grid, points)[:, 0] + self.density_shift) / self.voxel_size

    def _fade(self, points: Tensor) -> Tensor:
        """Trilinear interpolation (N,) of the occupancy grid between cell centres: 1 inside, 0 one cell out."""
        n = points.shape[0]
        volume = self._occupancy_views()[1]
        out = F.grid_sample(volume, points.reshape(1, 1, 1, n, 3).to(volume.dtype), mode="bilinear",
                            padding_mode="zeros", align_corners=False)
        return out.reshape(n)

    def radiance(self, points: Tensor, dirs: Tensor, appearance: Tensor) -> Tensor:
        features = _sample(self.feature_grid, points)  # (N, C)
        x = torch.cat([features, encode_direction(dirs.to(features.dtype)), appearance.to(features.dtype)], dim=-1)
        return torch.sigmoid(self.colour_mlp(x))

    def occupied(self, points: Tensor) -> Tensor:
        """Cells to sample: the occupied ones grown by one cell, the margin over which `density` fades out."""
        return lookup(self._occupancy_views()[0], points)

    def bounds(self) -> Tensor:
        """(2, 3) the box around the cells `occupied` marks; rays are sampled only inside it."""
        return self._occupancy_views()[2]

    def _occupancy_views(self) -> tuple[Tensor, Tensor, Tensor]:
        """The occupancy grid grown by one cell (bool (r, r, r)), as a volume (1, 1, r, r, r) in the density's dtype,
        and the box around the grown grid (2, 3): made once per state of the grid, not at every render (a refresh,
        a load or a move makes them anew)."""
        key = (self.occupancy.data_ptr(), self.occupancy._version, self.density_grid.dtype)
        if getattr(self, "_occupancy_key", None) != key:
            grown = dilate(self.occupancy)
            self._occupancy_cache = (grown, self.occupancy.to(self.density_grid.dtype)[None, None],
                                     occupied_bounds(grown).to(self.density_grid.dtype))
            self._occupancy_key = key
        return self._occupancy_cache

    def total_variation(self) -> tuple[Tensor, Tensor]:
        """Squared gradient of the density grid and of the feature grid, averaged over their vertices (finite
        differences over the vertex spacing, so a weight means the same at any resolution): the smoothness prior of
        Plenoxels and DVGO, against fitting each view's noise."""
        features = self.config.feature_resolution
        return (squared_gradient(self.density_grid, self.voxel_size),
                squared_gradient(self.feature_grid, 2.0 / (features - 1)))

    @torch.no_grad()
    def update_occupancy(self, min_alpha: float, within: Tensor | None = None) -> None:
        """Mark occupied the cells where one sample step is more opaque than `min_alpha` somewhere (the density's
        exact maximum over the cell, then grown by one cell), intersected with `within` when given."""
        peak = cell_maxima(self.density_grid[0, 0], self.config.occupancy_resolution)
        sigma = F.softplus(peak + self.density_shift) / self.voxel_size
        occupied = dilate(1.0 - torch.exp(-sigma * self.step_size) > min_alpha)
        self.occupancy.copy_(occupied if within is None else occupied & within)
