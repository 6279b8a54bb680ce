"""The original NeRF configuration that Neural-Sim rendered with, as a throughput baseline: 8×256 MLP with a
skip at layer 5, positional encoding (10 octaves for points, 4 for directions), 64 coarse + 128 fine samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POINT_OCTAVES, DIRECTION_OCTAVES = 10, 4
COARSE_SAMPLES, FINE_SAMPLES = 64, 128


def positional_encoding(x: Tensor, octaves: int) -> Tensor:
    """(N, 3) → (N, 3 + 6·octaves): x, sin(2^k x), cos(2^k x)."""
    scaled = torch.cat([x * (2.0**k) for k in range(octaves)], dim=-1)
    return torch.cat([x, torch.sin(scaled), torch.cos(scaled)], dim=-1)


class VanillaNeRF(nn.Module):
    """One NeRF MLP (the coarse and the fine network have this same shape)."""

    def __init__(self, width: int = 256, depth: int = 8, skip: int = 4):
        super().__init__()
        point_dim, dir_dim = 3 + 6 * POINT_OCTAVES, 3 + 6 * DIRECTION_OCTAVES
        self.skip = skip
        self.layers = nn.ModuleList(
            [nn.Linear(point_dim if i == 0 else width + (point_dim if i == skip + 1 else 0), width) for i in range(depth)]
        )
        self.sigma = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.colour = nn.Sequential(nn.Linear(width + dir_dim, width // 2), nn.ReLU(), nn.Linear(width // 2, 3))

    def forward(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        encoded = positional_encoding(points, POINT_OCTAVES)
        h = encoded
        for i, layer in enumerate(self.layers):
            if i == self.skip + 1:
                h = torch.cat([h, encoded], dim=-1)
            h = F.relu(layer(h))
        sigma = F.relu(self.sigma(h))[..., 0]
        rgb = torch.sigmoid(self.colour(torch.cat([self.feature(h), positional_encoding(dirs, DIRECTION_OCTAVES)], -1)))
        return sigma, rgb


def _composite(model: VanillaNeRF, origins: Tensor, dirs: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Rendered premultiplied rgb (R, 3) and weights (R, S) at sorted distances t (R, S); the last interval ends at
    the far bound (the object box holds everything, so no infinite last interval paints the background)."""
    points = origins[:, None] + t[..., None] * dirs[:, None]  # (R, S, 3)
    sigma, rgb = model(points.reshape(-1, 3), dirs[:, None].expand_as(points).reshape(-1, 3))
    sigma, rgb = sigma.reshape(t.shape), rgb.reshape(*t.shape, 3)
    delta = torch.cat([t[:, 1:] - t[:, :-1], torch.zeros_like(t[:, :1])], dim=1)
    alpha = 1.0 - torch.exp(-sigma * delta)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + 1e-10], 1), 1)[:, :-1]
    weights = alpha * transmittance
    return (weights[..., None] * rgb).sum(1), weights


def _sample_pdf(bins: Tensor, weights: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Inverse-transform samples (R, count) from the piecewise-constant pdf of `weights` over `bins`."""
    pdf = (weights + 1e-5) / (weights + 1e-5).sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # (R, B + 1)
    u = torch.rand(cdf.shape[0], count, generator=generator, device=cdf.device)
    index = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[1] - 1)
    lo, hi = cdf.gather(1, index - 1), cdf.gather(1, index)
    b_lo, b_hi = bins.gather(1, index - 1), bins.gather(1, index)
    return b_lo + (u - lo) / (hi - lo).clamp(min=1e-5) * (b_hi - b_lo)


def render_vanilla_levels(coarse: VanillaNeRF, fine: VanillaNeRF, origins: Tensor, dirs: Tensor, near: Tensor | float,
                          far: Tensor | float, generator: torch.Generator) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Hierarchical NeRF rendering between `near` and `far` (scalars or (R,)): 64 stratified coarse samples, then
    128 importance samples through the fine net. Returns (rgb, alpha) of the coarse and of the fine pass, rgb
    premultiplied (R, 3), alpha (R,): training fits both, as the original did."""
    near = torch.as_tensor(near, device=origins.device).expand(len(origins))[:, None]
    far = torch.as_tensor(far, device=origins.device).expand(len(origins))[:, None]
    steps = torch.linspace(0.0, 1.0, COARSE_SAMPLES + 1, device=origins.device)
    edges = near + steps * (far - near)  # (R, 65)
    jitter = torch.rand(len(origins), COARSE_SAMPLES, generator=generator, device=origins.device)
    t_coarse = edges[:, :-1] + jitter * (edges[:, 1:] - edges[:, :-1])  # (R, 64)
    rgb_coarse, weights = _composite(coarse, origins, dirs, t_coarse)
    bins = torch.cat([t_coarse, far], dim=1)  # (R, 65)
    t_fine = _sample_pdf(bins, weights.detach(), FINE_SAMPLES, generator)
    t_all, _ = torch.sort(torch.cat([t_coarse, t_fine.detach()], dim=1), dim=1)  # (R, 192)
    rgb_fine, weights_fine = _composite(fine, origins, dirs, t_all)
    return (rgb_coarse, weights.sum(1)), (rgb_fine, weights_fine.sum(1))


def render_vanilla(coarse: VanillaNeRF, fine: VanillaNeRF, origins: Tensor, dirs: Tensor, near: Tensor | float,
                   far: Tensor | float, generator: torch.Generator) -> Tensor:
    """The fine pass's premultiplied rgb (R, 3)."""
    return render_vanilla_levels(coarse, fine, origins, dirs, near, far, generator)[1][0]
