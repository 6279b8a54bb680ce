"""Commands of the task part: `train` a RetinaNet on a COCO set into a model folder, and `evaluate` a
model folder on a COCO set (COCO AP, AP50, per-class AP; printed and written as JSON; the detections optionally
written as a COCO results file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuralsim.errors import UserError
from neuralsim.tasks.config import DetectorConfig, TrainConfig

DETECTOR, TRAIN = DetectorConfig(), TrainConfig()  # the options' defaults are the configs' own


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        coco_dir: Annotated[Path, typer.Argument(help="COCO set: a folder with annotations.json and its images.")],
        out: Annotated[Path, typer.Option(help="Output model folder (model.safetensors, detector.json, metrics).")],
        backbone: Annotated[str, typer.Option(help="resnet18, resnet34, resnet50 or mobilenet_v3.")] = DETECTOR.backbone,
        epochs: Annotated[int, typer.Option(help="Passes over the data.")] = TRAIN.epochs,
        steps: Annotated[int, typer.Option(help="Exact optimiser steps instead of epochs (0: use --epochs).")] = TRAIN.steps,
        batch_size: Annotated[int, typer.Option(help="Images per step.")] = TRAIN.batch_size,
        lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up then cosine).")] = TRAIN.lr,
        trainable: Annotated[str, typer.Option(help="all, heads, heads+fpn or a regex on parameter names.")] = TRAIN.trainable,
        freeze_backbone: Annotated[bool, typer.Option(help="Freeze the backbone body.")] = DETECTOR.freeze_backbone,
        backbone_weights: Annotated[Path | None, typer.Option(help="Local torchvision ImageNet checkpoint of the backbone.")] = None,
        fpn_channels: Annotated[int, typer.Option(help="Channels of the feature pyramid and heads.")] = DETECTOR.fpn_channels,
        head_activation: Annotated[str, typer.Option(help="relu or silu (smooth Hessian).")] = DETECTOR.head_activation,
        box_loss: Annotated[str, typer.Option(help="smooth_l1, l1 (torchvision's) or giou.")] = DETECTOR.box_loss,
        hflip: Annotated[bool, typer.Option(help="Mirror images at random (augmentation).")] = TRAIN.hflip,
        init_from: Annotated[Path | None, typer.Option(help="Model folder to warm-start from.")] = None,
        reinit: Annotated[bool, typer.Option(help="Redraw the trained parameters from --seed before training.")] = False,
        seed: Annotated[int, typer.Option(help="Random seed (initialisation, batch order, flips).")] = TRAIN.seed,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
        overwrite: Annotated[bool, typer.Option(help="Replace an output folder that holds files.")] = False,
    ) -> None:
        """Train a RetinaNet detector on a COCO set."""
        from neuralsim.runtime import RunDir, check_output_dir, resolve_device, staged_output_dir
        from neuralsim.tasks.checkpoint import load_detector, save_detector
        from neuralsim.tasks.data import CocoDetectionData
        from neuralsim.tasks.detector import build_detector
        from neuralsim.tasks.train import TrainConfig, train_detector

        check_output_dir(out, overwrite)
        torch_device = resolve_device(device)
        data = CocoDetectionData.load(coco_dir)
        if init_from is not None:
            model = load_detector(init_from)
            if model.config.num_classes < data.num_classes:
                raise UserError(f"Model {init_from} knows {model.config.num_classes} classes but {coco_dir} "
                                f"uses category ids up to {data.num_classes}.")
        else:
            model = build_detector(backbone, data.num_classes, category_names=data.category_names,
                                   image_size=max(data.height, data.width), fpn_channels=fpn_channels,
                                   head_activation=head_activation, box_loss=box_loss, freeze_backbone=freeze_backbone,
                                   backbone_weights=backbone_weights, seed=seed)
        config = TrainConfig(epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, trainable=trainable,
                             init="reinit" if reinit else "warm", hflip=hflip, seed=seed)
        model.to(torch_device)
        with staged_output_dir(out, overwrite) as stage:
            run = RunDir(stage, {"data": str(coco_dir), "init_from": init_from, "detector": model.config,
                                 "train": config})
            summary = train_detector(model, data, config, run=run)
            run.close()
            save_detector(model, stage)
        typer.echo(f"{out}: {summary.steps} steps, {summary.images_per_second:.1f} images/s, "
                   f"final loss {summary.final_loss:.4f}")

    @app.command("evaluate")
    def evaluate_cmd(
        model_dir: Annotated[Path, typer.Argument(help="Model folder written by `neuralsim train`.")],
        coco_dir: Annotated[Path, typer.Argument(help="COCO set to evaluate on.")],
        out: Annotated[Path | None, typer.Option(help="Output JSON (default: MODEL_DIR/eval-<set name>.json).")] = None,
        detections: Annotated[Path | None, typer.Option(help="Also write the detections here as COCO results (a JSON "
                                                        "list of image_id, category_id, bbox [x, y, w, h], score).")] = None,
        batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 16,
        device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    ) -> None:
        """Evaluate a detector with COCO metrics (pycocotools): AP, AP50, AP75 and AP per class."""
        from neuralsim.runtime import atomic_write_json, resolve_device
        from neuralsim.tasks.checkpoint import load_detector
        from neuralsim.tasks.data import CocoDetectionData
        from neuralsim.tasks.evaluate import predict_coco_results, score_coco_results

        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}.")
        model = load_detector(model_dir, resolve_device(device))
        data = CocoDetectionData.load(coco_dir)
        if data.num_classes > model.config.num_classes:
            raise UserError(f"{coco_dir} uses category ids up to {data.num_classes} but model {model_dir} "
                            f"knows only {model.config.num_classes} classes.")
        results = predict_coco_results(model, data, batch_size=batch_size)
        result = score_coco_results(results, data, batch_size=batch_size)
        path = atomic_write_json(out or model_dir / f"eval-{coco_dir.resolve().name}.json", result)
        typer.echo(_format(result))
        typer.echo(f"written to {path}")
        if detections is not None:
            typer.echo(f"detections written to {atomic_write_json(detections, results)}")


def _format(result) -> str:
    def pct(v: float | None) -> str:
        return "  n/a" if v is None else f"{100 * v:5.1f}"

    lines = [f"AP {pct(result.ap)}   AP50 {pct(result.ap50)}   AP75 {pct(result.ap75)}   "
             f"({result.num_images} images, {result.num_detections} detections)", f"{'class':28s}    AP  AP50"]
    lines += [f"{name:28s} {pct(v['ap'])} {pct(v['ap50'])}" for name, v in result.per_class.items()]
    return "\n".join(lines)
