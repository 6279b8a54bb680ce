"""The distortion loss of mip-NeRF 360 (the fit's sharpening term): the O(S) form equals the pairwise definition."""

from __future__ import annotations

import torch

from neuralsim.render.volume import distortion


def _pairwise(weights, t, delta):
    return ((weights[:, :, None] * weights[:, None, :] * (t[:, :, None] - t[:, None, :]).abs()).sum(dim=(1, 2))
            + (weights.square() * delta).sum(dim=1) / 3.0)


def test_distortion_equals_the_pairwise_definition():
    generator = torch.Generator().manual_seed(0)
    t = torch.sort(torch.rand(5, 9, generator=generator, dtype=torch.float64) * 4, dim=1).values
    weights = torch.rand(5, 9, generator=generator, dtype=torch.float64) / 9
    weights[:, -2:] = 0.0  # padding
    delta = torch.full_like(t, 0.05)
    torch.testing.assert_close(distortion(weights, t, delta), _pairwise(weights, t, delta))


def test_distortion_is_smaller_for_weights_gathered_at_one_depth():
    t = torch.linspace(0, 1, 11)[None].repeat(2, 1)
    delta = torch.full_like(t, 0.1)
    spread = torch.full((1, 11), 1 / 11)
    gathered = torch.zeros(1, 11)
    gathered[0, 5] = 1.0
    values = distortion(torch.cat([spread, gathered]), t, delta)
    assert values[1] < 0.2 * values[0]
    torch.testing.assert_close(values[1], torch.tensor(0.1 / 3))  # one sample: ⅓ w² δ
