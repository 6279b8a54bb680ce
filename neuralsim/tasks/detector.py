"""The downstream detector: torchvision RetinaNet sized for 64–256 px images, a small backbone registry,
and a wrapper whose output type never changes with train/eval mode (losses per image and detections)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import mobilenet_v3_large, resnet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNet, RetinaNetHead
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from neuralsim.errors import UserError
from neuralsim.tasks.config import DetectorConfig

Targets = list[dict[str, Tensor]]  # per image: "boxes" (n, 4) xyxy pixels, "labels" (n,) int64, 0-based


@dataclass
class DetectorOutput:
    """What the detector returns in any mode: per-image losses (when targets were given) and detections."""

    losses: dict[str, Tensor] | None  # "classification", "bbox_regression": (N,) per image
    detections: list[dict[str, Tensor]] | None  # per image: boxes (k, 4) xyxy, scores (k,), labels (k,) 0-based

    def loss_per_image(self) -> Tensor:
        """(N,) sum of the loss terms of each image."""
        if self.losses is None:
            raise ValueError("no targets were given, so there are no losses")
        return sum(self.losses.values())  # type: ignore[return-value]


class Detector(RetinaNet):
    """RetinaNet that takes float RGB [0, 1] NCHW batches as they come (normalisation inside, no resize)
    and returns a `DetectorOutput` in train and eval mode alike."""

    def __init__(self, backbone: BackboneWithFPN, config: DetectorConfig):
        sizes = config.resolved_anchor_sizes()
        anchors = AnchorGenerator(tuple((s, s * 2 ** (1 / 3), s * 2 ** (2 / 3)) for s in sizes), ((0.5, 1.0, 2.0),) * 5)
        norm = _group_norm if config.head_norm else None
        head = RetinaNetHead(backbone.out_channels, anchors.num_anchors_per_location()[0], config.num_classes, norm)
        super().__init__(backbone, config.num_classes, min_size=config.image_size, max_size=config.image_size,
                         anchor_generator=anchors, head=head, score_thresh=config.score_thresh,
                         nms_thresh=config.nms_thresh, detections_per_img=config.detections_per_img)
        self.config = config
        head.regression_head._loss_type = config.box_loss
        if config.head_activation == "silu":
            _replace_relu(self.head, nn.SiLU)
        self.register_buffer("pixel_mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor, targets: Targets | None = None, *, detect: bool | None = None) -> DetectorOutput:
        """images (N, 3, H, W) float RGB in [0, 1]; `detect` defaults to True when no targets are given."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        N, _, H, W = images.shape
        features = list(self.backbone((images - self.pixel_mean) / self.pixel_std).values())  # 5 × (N, C, h, w)
        head_outputs = self.head(features)  # cls_logits (N, HWA, K), bbox_regression (N, HWA, 4)
        anchors = self.anchor_generator(ImageList(images, [(H, W)] * N), features)  # N × (HWA, 4)
        losses = self._losses_per_image(targets, head_outputs, anchors) if targets is not None else None
        detect = targets is None if detect is None else detect
        detections = self._detect(features, head_outputs, anchors, (H, W)) if detect else None
        return DetectorOutput(losses, detections)

    def _losses_per_image(self, targets: Targets, head_outputs: dict[str, Tensor], anchors: list[Tensor]):
        """torchvision's focal + box losses, each image normalised by its own foreground count: (N,) each."""
        per_image = [self.compute_loss([t], {k: v[j : j + 1] for k, v in head_outputs.items()}, [anchors[j]])
                     for j, t in enumerate(targets)]
        return {k: torch.stack([p[k] for p in per_image]) for k in per_image[0]}

    def _detect(self, features: list[Tensor], head_outputs: dict[str, Tensor], anchors: list[Tensor],
                size: tuple[int, int]) -> list[dict[str, Tensor]]:
        A = head_outputs["cls_logits"].shape[1] // sum(f.shape[-2] * f.shape[-1] for f in features)
        per_level = [f.shape[-2] * f.shape[-1] * A for f in features]
        split = {k: list(v.detach().split(per_level, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(a.split(per_level)) for a in anchors]
        return self.postprocess_detections(split, split_anchors, [size] * len(anchors))


def _replace_relu(module: nn.Module, activation: Callable[[], nn.Module]) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, activation())
        else:
            _replace_relu(child, activation)


# ----------------------------------------------------------------------------- backbone registry

BackboneBuilder = Callable[[DetectorConfig], BackboneWithFPN]
BACKBONES: dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    def add(builder: BackboneBuilder) -> BackboneBuilder:
        BACKBONES[name] = builder
        return builder

    return add


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (1×1 maps at the top of the pyramid stay sane)."""
    return nn.GroupNorm(math.gcd(32, max(channels // 4, 1)), channels)


def _norm_layer(config: DetectorConfig) -> Callable[[int], nn.Module]:
    if config.norm == "group":
        return _group_norm
    if config.norm == "frozen_bn":
        return FrozenBatchNorm2d
    raise UserError(f"Detector norm must be 'group' or 'frozen_bn', not {config.norm!r}.")


def _resnet_fpn(name: str, config: DetectorConfig) -> BackboneWithFPN:
    body = resnet.__dict__[name](weights=None, norm_layer=_norm_layer(config))
    stage2 = body.inplanes // 8  # channels of layer1's output
    return BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"}, [stage2 * 2, stage2 * 4, stage2 * 8],
                           config.fpn_channels, extra_blocks=LastLevelP6P7(config.fpn_channels, config.fpn_channels))


for _depth in (18, 34, 50):
    register_backbone(f"resnet{_depth}")(lambda config, _n=f"resnet{_depth}": _resnet_fpn(_n, config))


@register_backbone("mobilenet_v3")
def _mobilenet_v3_fpn(config: DetectorConfig) -> BackboneWithFPN:
    features = mobilenet_v3_large(weights=None, norm_layer=_norm_layer(config)).features
    # Blocks 4, 7, 16 end the stride-8, -16 and -32 stages (40, 80 and 960 channels).
    return BackboneWithFPN(features, {"4": "0", "7": "1", "16": "2"}, [40, 80, 960], config.fpn_channels,
                           extra_blocks=LastLevelP6P7(config.fpn_channels, config.fpn_channels))


# ----------------------------------------------------------------------------- building


def build_detector(name: str, num_classes: int, *, backbone_weights: str | Path | None = None, seed: int = 0,
                   **settings) -> Detector:
    """A RetinaNet with backbone `name`, initialised from `seed` (from scratch unless `backbone_weights` names a
    local torchvision classification checkpoint; `norm` then defaults to 'frozen_bn'); `settings` are any other
    `DetectorConfig` fields, at its defaults when left out."""
    if backbone_weights is not None:
        settings.setdefault("norm", "frozen_bn")
    config = DetectorConfig(backbone=name, num_classes=num_classes, **settings)
    model = build_from_config(config, seed=seed)
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    return model


def build_from_config(config: DetectorConfig, *, seed: int = 0) -> Detector:
    """The detector described by `config`, with its initial weights drawn from `seed`."""
    _check_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Detector(BACKBONES[config.backbone](config), config)
    if config.freeze_backbone:
        model.backbone.body.requires_grad_(False)
    return model


def _check_config(config: DetectorConfig) -> None:
    choices = {"backbone": sorted(BACKBONES), "head_activation": ["relu", "silu"],
               "box_loss": ["l1", "smooth_l1", "giou"], "norm": ["group", "frozen_bn"]}
    for key, allowed in choices.items():
        if getattr(config, key) not in allowed:
            raise UserError(f"Detector {key} must be one of {', '.join(allowed)}, not {getattr(config, key)!r}.")
    if config.num_classes < 1 or config.image_size < 32 or config.fpn_channels < 1:
        raise UserError("Detector needs num_classes ≥ 1, image_size ≥ 32 px and fpn_channels ≥ 1.")
    if config.anchor_sizes and len(config.anchor_sizes) != 5:
        raise UserError(f"Detector anchor_sizes must list 5 sizes (one per pyramid level), not {len(config.anchor_sizes)}.")


def load_backbone_weights(model: Detector, path: str | Path) -> None:
    """Load a local torchvision classification checkpoint (.pth/.pt or .safetensors) into the backbone body."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Backbone weights file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("features."): v for k, v in state.items()}
    body = model.backbone.body
    missing, _ = body.load_state_dict(state, strict=False)
    if missing:
        raise UserError(f"Backbone weights {path} do not fit backbone {model.config.backbone} with norm "
                        f"{model.config.norm!r} ({len(missing)} tensors missing, e.g. {missing[0]}).")
