"""The settings of the detection task, with no import of torch: the detector (`DetectorConfig`, saved beside its
weights) and one training of it (`TrainConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DetectorConfig:
    """Everything needed to rebuild a detector; saved as JSON beside its weights."""

    backbone: str = "resnet18"
    """Backbone name from the registry: resnet18, resnet34, resnet50 or mobilenet_v3."""
    num_classes: int = 1
    """Number of classes; model label k is COCO category id k + 1."""
    category_names: list[str] = field(default_factory=list)
    """Name of each class in label order (may be empty)."""
    image_size: int = 128
    """Side of the square training images in pixels; anchor sizes follow it. Images are never resized."""
    norm: str = "group"
    """Backbone normalisation: 'group' (GroupNorm, from scratch) or 'frozen_bn' (for pretrained weights)."""
    head_norm: bool = True
    """GroupNorm inside the classification and box heads."""
    head_activation: str = "relu"
    """Activation in the heads: 'relu' or 'silu' (smooth, so the Hessian is not piecewise)."""
    fpn_channels: int = 256
    """Channels of the feature pyramid and the heads."""
    anchor_sizes: list[float] = field(default_factory=list)
    """Base anchor size (pixels) for each of the 5 pyramid levels; empty: image_size/8 · 2^level."""
    box_loss: str = "smooth_l1"
    """Box regression loss: 'smooth_l1', 'l1' (torchvision's default) or 'giou'. Under 'l1', ∇θ of the loss
    holds only the sign of each box residual, so the pathwise hypergradient (`nso`) cannot see a box move:
    use 'smooth_l1' or 'giou' for it to follow the labels."""
    freeze_backbone: bool = False
    """Freeze the backbone body (the paper trains only the FPN and heads on a pretrained backbone)."""
    score_thresh: float = 0.05
    """Detections below this score are dropped."""
    nms_thresh: float = 0.5
    """IoU threshold of per-class non-maximum suppression."""
    detections_per_img: int = 100
    """At most this many detections per image (COCO evaluates 100)."""

    def resolved_anchor_sizes(self) -> list[float]:
        return list(self.anchor_sizes) or [self.image_size / 8 * 2**k for k in range(5)]


@dataclass
class TrainConfig:
    """How to train a detector on one dataset."""

    epochs: int = 10
    """Passes over the data (ignored when `steps` > 0)."""
    steps: int = 0
    """Exact number of optimiser steps, cycling through the data; 0 means use `epochs`."""
    batch_size: int = 8
    """Images per step."""
    optimizer: str = "adamw"
    """'adamw' or 'sgd' (with momentum)."""
    lr: float = 1e-3
    """Peak learning rate."""
    weight_decay: float = 1e-4
    """Decoupled (AdamW) or L2 (SGD) weight decay."""
    momentum: float = 0.9
    """SGD momentum."""
    warmup_steps: int = 50
    """Linear warm-up from 0 to `lr` over this many steps."""
    schedule: str = "cosine"
    """After warm-up: 'cosine' decay to 0 or 'constant'."""
    grad_clip: float = 10.0
    """Clip the gradient norm to this (0: no clipping)."""
    trainable: str = "all"
    """Parameters trained: 'all', 'heads', 'heads+fpn' or a regex on names (frozen ones never train)."""
    init: str = "warm"
    """'warm' continues from the model's weights; 'reinit' redraws the trainable ones from `seed` first."""
    hflip: bool = False
    """Mirror each image with probability 1/2 (augmentations are off by default)."""
    seed: int = 0
    """Seeds the batch order, the flips and a re-initialisation."""
    log_every: int = 10
    """Log the mean losses every this many steps."""
