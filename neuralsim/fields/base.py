"""The `Field` interface every radiance field implements, and its NeRF-W appearance table.

A field lives in object space [-1, 1]³; the renderer sees it only through `Field.fns(appearance)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn


class FieldFns(NamedTuple):
    """What the volume renderer needs from a field (nerfacc style: plain callables, no field type)."""

    sigma_fn: Callable[[Tensor], Tensor]  # points (N, 3) → density σ (N,), 1/object units
    rgb_fn: Callable[[Tensor, Tensor, Tensor], Tensor]  # points, dirs (N, 3), ray ids (N,) → straight rgb (N, 3)
    occupied_fn: Callable[[Tensor], Tensor]  # points (N, 3) → bool (N,): False where the field is known empty
    step: float  # sample spacing along rays, object units
    bounds: Tensor | None = None  # (2, 3) xyz corners of the box outside which the field is known empty (None: all)


class AppearanceTable(nn.Module):
    """NeRF-W: one learned embedding per capture (training) image; the anchor of lighting condition k
    is the mean embedding of the images taken under k."""

    def __init__(self, image_appearance_ids: Tensor, dim: int, num_appearances: int, seed: int = 0,
                 names: list[str] | None = None):
        super().__init__()
        if int(image_appearance_ids.max()) >= num_appearances:
            raise ValueError("an image uses an appearance id beyond num_appearances")
        generator = torch.Generator().manual_seed(seed)
        # Images of one lighting condition start from one shared vector, so every anchor is meaningful.
        condition_init = 0.1 * torch.randn(num_appearances, dim, generator=generator)
        self.embeddings = nn.Parameter(condition_init[image_appearance_ids].clone())  # (M, E)
        self.register_buffer("image_appearance_ids", image_appearance_ids.long().clone())  # (M,)
        self.num_appearances = num_appearances
        self.names = list(names) if names is not None else [f"appearance_{k}" for k in range(num_appearances)]

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def anchors(self) -> Tensor:
        """(K, E): anchor k = mean embedding of the images of lighting condition k."""
        ids = self.image_appearance_ids
        sums = torch.zeros(self.num_appearances, self.dim, dtype=self.embeddings.dtype, device=self.embeddings.device)
        sums = sums.index_add(0, ids, self.embeddings)
        counts = torch.bincount(ids, minlength=self.num_appearances).clamp(min=1).to(sums.dtype)
        return sums / counts[:, None]

    def spread(self) -> Tensor:
        """Mean squared distance of each image's embedding from its condition's anchor (the embeddings' variance
        within the lighting conditions)."""
        return (self.embeddings - self.anchors()[self.image_appearance_ids]).square().sum(dim=1).mean()

    def anchor(self, k: int) -> Tensor:
        """(E,) the anchor of lighting condition k."""
        if not 0 <= k < self.num_appearances:
            raise ValueError(f"appearance {k} is not one of the field's {self.num_appearances} lighting conditions")
        return self.anchors()[k]

    def resolve(self, appearance: Tensor | int) -> Tensor:
        """An anchor index k, or weights (K,) on the simplex mixing the anchors → embedding (E,)."""
        if isinstance(appearance, int):
            return self.anchor(appearance)
        weights = appearance.to(self.embeddings)
        if weights.shape != (self.num_appearances,):
            raise ValueError(f"appearance weights must have shape ({self.num_appearances},), got {tuple(weights.shape)}")
        return weights @ self.anchors()


class Field(nn.Module, ABC):
    """A radiance field over object space [-1, 1]³ whose colour depends on view direction and appearance."""

    appearance: AppearanceTable

    @abstractmethod
    def density(self, points: Tensor) -> Tensor:
        """Density σ ≥ 0 (N,) at points (N, 3), in 1/object units."""

    @abstractmethod
    def radiance(self, points: Tensor, dirs: Tensor, appearance: Tensor) -> Tensor:
        """Straight RGB in [0, 1] (N, 3) at points (N, 3) seen along unit dirs (N, 3) under appearance (N, E)."""

    @abstractmethod
    def occupied(self, points: Tensor) -> Tensor:
        """Bool (N,): False only where the field is known to be empty (empty-space skipping)."""

    @property
    @abstractmethod
    def step_size(self) -> float:
        """Sample spacing along rays (object units) that resolves the field."""

    def bounds(self) -> Tensor | None:
        """(2, 3) xyz corners of a box outside which the field is known empty (rays are sampled only inside it);
        None: the whole object box."""
        return None

    @property
    def anchor_count(self) -> int:
        return self.appearance.num_appearances

    def fns(self, appearance: Tensor) -> FieldFns:
        """Bind an appearance: one embedding (E,) for every ray, or one per ray (R, E)."""

        def rgb_fn(points: Tensor, dirs: Tensor, ray_ids: Tensor) -> Tensor:
            per_point = appearance[ray_ids] if appearance.dim() == 2 else appearance.expand(len(points), -1)
            return self.radiance(points, dirs, per_point)

        return FieldFns(self.density, rgb_fn, self.occupied, self.step_size, self.bounds())
