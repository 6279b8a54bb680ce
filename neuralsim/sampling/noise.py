"""The noise behind ψ's draws and what a draw gives the renderer: Gumbel noise and in-bin offsets per factor,
the renderer's own per-image uniforms, and the render parameters of n images. Replaying the noise replays the draw."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

DTYPE = torch.float64
PLACEMENT_DIMS = 3  # per-image uniforms for the renderer: image-plane shift x, y and the background


@dataclass(frozen=True)
class FactorNoise:
    """The noise of n draws of one factor: Gumbel(0, 1) per bin and a uniform offset within the bin."""

    gumbel: Tensor  # (n, k)
    jitter: Tensor  # (n,) in [0, 1)

    def select(self, index: Tensor | slice) -> FactorNoise:
        return FactorNoise(self.gumbel[index], self.jitter[index])


@dataclass(frozen=True)
class ObjectNoise:
    """The noise of n draws of one object's render parameters; replaying it gives the same parameters."""

    factors: dict[str, FactorNoise]
    placement: Tensor  # (n, PLACEMENT_DIMS) U(0, 1): the renderer's own per-image draws (shift, background)

    def __len__(self) -> int:
        return len(self.placement)

    def select(self, index: Tensor | slice) -> ObjectNoise:
        return ObjectNoise({f: n.select(index) for f, n in self.factors.items()}, self.placement[index])


@dataclass(frozen=True)
class RenderParams:
    """Render parameters of n images of one object (what a renderer consumes), and the bin of each factor."""

    azimuth_deg: Tensor  # (n,) degrees in [0, 360)
    elevation_deg: Tensor  # (n,) degrees
    radius: Tensor  # (n,) object-space units
    lighting: Tensor  # (n, L) weights over the lighting conditions' appearance anchors
    bins: dict[str, Tensor] = field(default_factory=dict)  # factor → (n,) long, the bin each value came from
    placement: Tensor | None = None  # (n, PLACEMENT_DIMS) U(0, 1) noise the renderer uses for shift and background

    CONTINUOUS = ("azimuth_deg", "elevation_deg", "radius", "lighting")

    def __len__(self) -> int:
        return len(self.azimuth_deg)

    def tensors(self) -> tuple[Tensor, ...]:
        """The continuous parameters, in `CONTINUOUS` order."""
        return tuple(getattr(self, name) for name in self.CONTINUOUS)

    def with_tensors(self, tensors: Iterable[Tensor]) -> RenderParams:
        return replace(self, **dict(zip(self.CONTINUOUS, tensors, strict=True)))

    def detach(self) -> RenderParams:
        return self.with_tensors(t.detach() for t in self.tensors())

    def select(self, index: Tensor | slice) -> RenderParams:
        return replace(self.with_tensors(t[index] for t in self.tensors()),
                       bins={f: b[index] for f, b in self.bins.items()},
                       placement=None if self.placement is None else self.placement[index])


def sample_gumbel(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = DTYPE) -> Tensor:
    """Standard Gumbel noise −log(−log U), U ~ U(0, 1) kept away from 0."""
    u = torch.rand(shape, generator=generator, dtype=dtype).clamp_min(torch.finfo(dtype).tiny)
    return -torch.log(-torch.log(u))
