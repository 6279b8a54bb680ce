"""Training (seeded order, determinism, re-initialisation, learning) and COCO evaluation through
pycocotools on hand-made cases."""

import pytest
import torch

from neuralsim.errors import UserError
from neuralsim.tasks.data import CocoDetectionData, TensorDetectionData
from neuralsim.tasks.evaluate import evaluate_detector, evaluate_tensors
from neuralsim.tasks.train import TrainConfig, batch_order, train_detector

NAMES = ["a", "b", "c"]
GT = [{"boxes": torch.tensor([[1.0, 2, 20, 30], [30, 30, 60, 50]]), "labels": torch.tensor([0, 1])},
      {"boxes": torch.tensor([[5.0, 5, 15, 15]]), "labels": torch.tensor([0])}]
SIZES = [(64, 64), (64, 64)]


def _detections(boxes_labels):
    return [{"boxes": b, "scores": torch.ones(len(l)), "labels": l} for b, l in boxes_labels]


def test_perfect_detections_score_ap_one():
    result = evaluate_tensors(GT, _detections([(t["boxes"], t["labels"]) for t in GT]), SIZES, NAMES)
    assert result.ap == pytest.approx(1.0) and result.ap50 == pytest.approx(1.0)
    assert result.per_class["a"]["ap"] == pytest.approx(1.0) and result.per_class["b"]["ap50"] == pytest.approx(1.0)
    assert result.per_class["c"] == {"ap": None, "ap50": None}  # no ground truth: undefined, not 0


def test_no_detections_score_ap_zero():
    empty = _detections([(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))] * 2)
    result = evaluate_tensors(GT, empty, SIZES, NAMES)
    assert result.ap == 0.0 and result.ap50 == 0.0 and result.per_class["a"]["ap"] == 0.0


def test_wrong_class_and_shifted_boxes_lose_ap():
    # class b's only box is reported as class a; image 2's box misses by far more than IoU 0.5
    dets = _detections([(GT[0]["boxes"], torch.tensor([0, 0])), (torch.tensor([[40.0, 40, 50, 50]]), torch.tensor([0]))])
    result = evaluate_tensors(GT, dets, SIZES, NAMES)
    assert result.per_class["b"]["ap"] == 0.0
    assert 0.0 < result.per_class["a"]["ap50"] < 1.0


def test_batch_order_is_a_seeded_permutation_per_epoch():
    order = batch_order(10, 4, seed=1, total_steps=6)
    assert [len(b) for b in order] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(order[:3], [])) == list(range(10)) and sorted(sum(order[3:], [])) == list(range(10))
    assert order == batch_order(10, 4, seed=1, total_steps=6) and order != batch_order(10, 4, seed=2, total_steps=6)


def _train(make_detector, data, **kw):
    model = make_detector(seed=0)
    config = TrainConfig(**{"steps": 3, "batch_size": 4, "warmup_steps": 1, "seed": 0, **kw})
    train_detector(model, data, config, show_progress=False)
    return model


def test_training_is_deterministic_under_a_seed(shapes_set, make_detector):
    data = CocoDetectionData.load(shapes_set)
    a, b = _train(make_detector, data), _train(make_detector, data)
    c = _train(make_detector, data, seed=1, hflip=True)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_reinit_redraws_only_the_trained_subset(shapes_set, make_detector):
    data = CocoDetectionData.load(shapes_set)
    trained = _train(make_detector, data, trainable="heads")
    fresh = make_detector(seed=0)
    assert not torch.equal(trained.head.classification_head.cls_logits.weight, fresh.head.classification_head.cls_logits.weight)
    assert torch.equal(trained.backbone.fpn.layer_blocks[0][0].weight, fresh.backbone.fpn.layer_blocks[0][0].weight)
    train_detector(trained, data, TrainConfig(steps=1, init="reinit", trainable="heads", lr=1e-12, warmup_steps=1),
                   show_progress=False)
    torch.testing.assert_close(trained.head.classification_head.cls_logits.weight,
                               fresh.head.classification_head.cls_logits.weight)


def test_training_lowers_the_loss_and_evaluates_on_coco_and_tensors(shapes_set, make_detector):
    data = CocoDetectionData.load(shapes_set)
    model = make_detector(seed=0)
    images, targets = data.batch(list(range(len(data))))
    before = model(images, targets).loss_per_image().mean()
    train_detector(model, data, TrainConfig(steps=12, batch_size=4, lr=2e-3, warmup_steps=2), show_progress=False)
    after = model(images, targets).loss_per_image().mean()
    assert after < 0.7 * before
    on_file = evaluate_detector(model, data)
    in_memory = evaluate_detector(model, TensorDetectionData(images, targets, data.category_names))
    assert on_file.ap is not None and on_file.ap == pytest.approx(in_memory.ap)
    assert set(on_file.per_class) == {"red_box", "blue_disc"}


def test_bad_training_settings_raise_one_clear_error(shapes_set, make_detector):
    data = CocoDetectionData.load(shapes_set)
    with pytest.raises(UserError, match="batch_size"):
        train_detector(make_detector(), data, TrainConfig(batch_size=0), show_progress=False)
    with pytest.raises(UserError, match="optimizer"):
        train_detector(make_detector(), data, TrainConfig(steps=1, optimizer="lbfgs"), show_progress=False)
