"""Detector builders and wrapper: every backbone runs, outputs keep their type in train and eval mode,
gradients reach the images, options (frozen body, SiLU heads, local weights) and checkpoints work."""

import pytest
import torch
from torch import nn

from neuralsim.errors import UserError
from neuralsim.tasks.checkpoint import load_detector, save_detector
from neuralsim.tasks.detector import BACKBONES, DetectorOutput, build_detector


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_gives_losses_and_detections_at_64_px(name):
    model = build_detector(name, 3, image_size=64, fpn_channels=16)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    targets = [{"boxes": torch.tensor([[4.0, 6, 30, 40]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    out = model(images, targets, detect=True)
    assert set(out.losses) == {"classification", "bbox_regression"}
    assert out.loss_per_image().shape == (2,) and torch.isfinite(out.loss_per_image()).all()
    assert out.losses["bbox_regression"][1] == 0  # no objects: no box loss
    assert len(out.detections) == 2 and out.detections[0]["boxes"].shape[1] == 4


def test_output_type_and_values_do_not_change_with_mode(make_detector, make_batch):
    model = make_detector()
    images, targets = make_batch()
    outs = []
    for train in (True, False):
        model.train(train)
        out = model(images, targets, detect=True)
        assert isinstance(out, DetectorOutput) and out.losses is not None and out.detections is not None
        outs.append(out)
    torch.testing.assert_close(outs[0].loss_per_image(), outs[1].loss_per_image())
    model.train()
    assert model(images).losses is None and model(images).detections is not None  # no targets → detections


def test_gradients_reach_the_input_images(make_detector, make_batch):
    model = make_detector()
    images, targets = make_batch()
    images.requires_grad_(True)
    model(images, targets).loss_per_image().sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert images.grad[0].abs().sum() > 0 and images.grad[1].abs().sum() > 0


def test_frozen_backbone_and_silu_heads(make_detector):
    model = make_detector(freeze_backbone=True, head_activation="silu")
    assert not any(p.requires_grad for p in model.backbone.body.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert not any(isinstance(m, nn.ReLU) for m in model.head.modules())
    assert any(isinstance(m, nn.SiLU) for m in model.head.modules())


def test_same_seed_same_weights_and_anchor_sizes_follow_image_size(make_detector):
    a, b, c = make_detector(seed=3), make_detector(seed=3), make_detector(seed=4)
    wa, wb, wc = (m.head.classification_head.conv[0][0].weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.config.resolved_anchor_sizes() == [4.0, 8.0, 16.0, 32.0, 64.0]  # 32 px image: 32/8 · 2^k


def test_checkpoint_round_trip(tmp_path, make_detector, make_batch):
    model = make_detector(seed=5)
    images, targets = make_batch()
    save_detector(model, tmp_path / "m")
    loaded = load_detector(tmp_path / "m")
    assert loaded.config == model.config
    torch.testing.assert_close(loaded(images, targets).loss_per_image(), model(images, targets).loss_per_image())


def test_local_backbone_weights_load_into_the_body(tmp_path):
    from torchvision.models import resnet18
    from torchvision.ops.misc import FrozenBatchNorm2d

    net = resnet18(weights=None)
    with torch.no_grad():
        net.bn1.running_mean.fill_(0.25)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    model = build_detector("resnet18", 2, image_size=64, fpn_channels=16, backbone_weights=tmp_path / "r18.pth")
    assert model.config.norm == "frozen_bn" and isinstance(model.backbone.body.bn1, FrozenBatchNorm2d)
    assert torch.equal(model.backbone.body.conv1.weight, net.conv1.weight)
    assert torch.all(model.backbone.body.bn1.running_mean == 0.25)
    with pytest.raises(UserError, match="do not fit"):
        build_detector("resnet34", 2, image_size=64, fpn_channels=16, backbone_weights=tmp_path / "r18.pth")


@pytest.mark.parametrize("kw,match", [
    ({"head_activation": "tanh"}, "head_activation"),
    ({"norm": "batch"}, "norm"),
    ({"anchor_sizes": [8, 16]}, "anchor_sizes"),
    ({"backbone_weights": "/nonexistent/weights.pth"}, "does not exist"),
])
def test_bad_builder_options_raise_one_clear_error(kw, match):
    with pytest.raises(UserError, match=match):
        build_detector("resnet18", 2, image_size=64, fpn_channels=16, **kw)


def test_unknown_backbone_names_the_choices():
    with pytest.raises(UserError, match="mobilenet_v3"):
        build_detector("vgg16", 2)
