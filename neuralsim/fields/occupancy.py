"""Occupancy grids for empty-space skipping: cell lookup, cell centres, dilation, and the visual hull
carved from a capture's object masks.

A grid of resolution n splits [-1, 1]³ into n³ cells, stored (z, y, x) like `grid_sample` volumes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from neuralsim.cameras import Intrinsics, project


def cell_index(points: Tensor, resolution: int) -> Tensor:
    """Flat (z, y, x) cell index (N,) of points (N, 3) in [-1, 1]³ (points outside are clamped)."""
    ijk = ((points + 1.0) * (0.5 * resolution)).floor().long().clamp(0, resolution - 1)  # (N, 3) as x, y, z
    return (ijk[:, 2] * resolution + ijk[:, 1]) * resolution + ijk[:, 0]


def lookup(grid: Tensor, points: Tensor) -> Tensor:
    """Bool (N,) value of the occupancy `grid` (n, n, n) at points (N, 3)."""
    return grid.reshape(-1)[cell_index(points, grid.shape[0])]


def cell_centres(resolution: int, device=None, dtype=torch.float32) -> Tensor:
    """(n, n, n, 3) xyz centres of the cells, indexed (z, y, x)."""
    c = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) * (2.0 / resolution) - 1.0
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def dilate(grid: Tensor, cells: int = 1) -> Tensor:
    """Grow the occupied region of a bool grid (n, n, n) by `cells` in every direction."""
    k = 2 * cells + 1
    return F.max_pool3d(grid[None, None].float(), k, stride=1, padding=cells)[0, 0] > 0


def cell_maxima(volume: Tensor, resolution: int) -> Tensor:
    """(n, n, n) maximum over each cell of the trilinear interpolant of the vertex values `volume` (D, H, W), whose
    vertices span [-1, 1]³ like `grid_sample(align_corners=True)`.

    Exact, not probed: between the planes through the vertices and the planes of the cell faces the interpolant is
    multilinear, so its maximum over a cell lies on a corner of one of those pieces, and every such corner is a point
    of the product grid of the two sets of plane coordinates. A one-voxel wall between probe points is not missed.
    """
    bounds = torch.linspace(-1.0, 1.0, resolution + 1, dtype=torch.float64)  # the cell faces
    values = volume
    members = []
    for axis, size in enumerate(volume.shape):
        planes = torch.cat([torch.linspace(-1.0, 1.0, size, dtype=torch.float64), bounds]).sort().values
        # Linear interpolation along this axis onto the planes: (P, size) with two weights per row.
        t = (planes + 1.0) * (0.5 * (size - 1))
        low = t.floor().clamp(0, max(size - 2, 0)).long()
        frac = (t - low).clamp(0.0, 1.0)
        weights = torch.zeros(len(planes), size, dtype=torch.float64)
        weights[torch.arange(len(planes)), low] = 1.0 - frac
        weights[torch.arange(len(planes)), (low + 1).clamp(max=size - 1)] += frac
        weights = weights.to(device=volume.device, dtype=volume.dtype)
        values = torch.movedim(torch.tensordot(weights, values, dims=([1], [axis])), 0, axis)
        # The planes inside each cell's closed interval, a contiguous run of indices padded with its last one.
        start = torch.searchsorted(planes, bounds[:-1] - 1e-9)
        stop = torch.searchsorted(planes, bounds[1:] + 1e-9, right=True) - 1
        width = int((stop - start).max()) + 1
        run = torch.minimum(start[:, None] + torch.arange(width), stop[:, None])  # (n, width)
        members.append(run.to(volume.device))
    for axis, run in enumerate(members):
        shape = list(values.shape)
        picked = values.index_select(axis, run.reshape(-1))
        shape[axis: axis + 1] = list(run.shape)
        values = picked.reshape(shape).amax(dim=axis + 1)
    return values


def occupied_bounds(grid: Tensor) -> Tensor:
    """(2, 3) xyz corners (min, max) of the occupied cells of a bool grid (n, n, n); an empty grid gives an empty box
    (min > max), which no ray enters."""
    n = grid.shape[0]
    cells = grid.nonzero()  # (C, 3) as z, y, x
    if len(cells) == 0:
        return torch.tensor([[1.0] * 3, [-1.0] * 3], device=grid.device)
    xyz = cells.flip(-1).float()
    return torch.stack([xyz.amin(dim=0), xyz.amax(dim=0) + 1.0]) * (2.0 / n) - 1.0


def visual_hull(resolution: int, c2ws: Tensor, intrinsics: Intrinsics, alphas: Tensor, threshold: float = 0.05) -> Tensor:
    """Bool (n, n, n): cells whose centre no view sees on the background.

    c2ws (V, 4, 4) OpenGL camera-to-world; alphas (V, H, W) object masks in [0, 1]. A cell is carved when
    some view projects its centre inside the image onto a pixel with alpha ≤ `threshold`.
    """
    centres = cell_centres(resolution, device=c2ws.device).reshape(-1, 3)  # (C, 3)
    keep = torch.ones(len(centres), dtype=torch.bool, device=c2ws.device)
    for c2w, alpha in zip(c2ws.float(), alphas):
        depth = -(centres - c2w[:3, 3]) @ c2w[:3, 2]  # the camera looks down its −z
        u, v = project(centres, c2w, intrinsics).unbind(-1)
        inside = (depth > 0) & (u >= 0) & (u < intrinsics.width) & (v >= 0) & (v < intrinsics.height)
        col = u.clamp(0, intrinsics.width - 1).long()
        row = v.clamp(0, intrinsics.height - 1).long()
        keep &= ~(inside & (alpha[row, col] <= threshold))
    return keep.reshape(resolution, resolution, resolution)
