"""A YOLO detector trained from scratch by the ultralytics package on a `learn` run's exported learned dataset and on
a domain-randomisation set of the same size, both scored on the run's test photos (in the photos' own frame).

    # with neuralsim's environment: the DR export and the test photos in the YOLO layout
    python benchmarks/yolo_on_export.py prepare --run /tmp/learn-example/run --work /tmp/yolo
    # with an environment that has ultralytics (no pretrained weights: the model is built from its yaml)
    python benchmarks/yolo_on_export.py train --work /tmp/yolo --epochs 30 --seeds 0 1 2

`train` writes WORK/results.json: mAP50-95 and mAP50 per training set and seed."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def prepare(run: Path, work: Path) -> None:
    from neuralsim.data.coco import CocoBuilder, load_coco
    from neuralsim.data.yolo import write_yolo

    config = json.loads((run / "learn" / "config.json").read_text())
    project = json.loads((run / "config.json").read_text())
    dataset = json.loads((run / "dataset" / "annotations.json").read_text())
    source = dataset["info"]["source"]
    per_object = len(dataset["images"]) // len(config["fields"])
    if not (work / "dr").is_dir():  # the DR set: the learned set's size, scene settings and seed, ψ₀ instead of ψ
        fields = [f"{o}={p}" for o, p in config["fields"].items()]
        subprocess.run([sys.executable, "-m", "neuralsim.cli", "render", *fields, "--psi", str(run / "psi0.json"),
                        "--n", str(per_object), "--size", str(source["size"]), "--fov", str(source["fov_deg"]),
                        "--objects-per-image", str(source["objects_per_image"]), "--seed", str(dataset["info"]["seed"]),
                        "--format", "yolo", "--out", str(work / "dr")], check=True)
    photos = project["photos"]["coco"]
    coco = load_coco(photos)
    test_ids = set(json.loads((run / "photos" / "split.json").read_text())["test"])
    names = list(config["fields"])
    builder = CocoBuilder(names)  # the classes in the learned set's order
    category = {c.id: c.name for c in coco.categories}
    for sample in coco.samples:
        if sample.image_id in test_ids:
            image_id = builder.add_image(str(sample.image_path), sample.width, sample.height)
            for box, label in zip(sample.boxes_xyxy, sample.labels):
                builder.add_annotation(image_id, category[int(label)], box.tolist())
    (work / "test-coco").mkdir(parents=True, exist_ok=True)
    builder.save(work / "test-coco" / "annotations.json")
    if not (work / "test").is_dir():
        write_yolo(work / "test-coco", work / "test")
    print(f"prepared {work}: dr/yolo, test ({len(test_ids)} photos), learned at {run / 'dataset' / 'yolo'}")
    (work / "sets.json").write_text(json.dumps({"learned": str(run / "dataset" / "yolo"), "dr": str(work / "dr" / "yolo"),
                                                "test": str(work / "test"), "names": names,
                                                "train_size": source["size"]}, indent=2))


def train(work: Path, epochs: int, seeds: list[int]) -> None:
    from ultralytics import YOLO

    sets = json.loads((work / "sets.json").read_text())
    names = "\n".join(f"  {i}: {json.dumps(n)}" for i, n in enumerate(sets["names"]))
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for seed in seeds:
        for name in ("learned", "dr"):
            key = f"{name}-s{seed}"
            if key in results:
                continue
            data = work / f"{name}.yaml"
            data.write_text(f"train: {sets[name]}/images/train\nval: {sets['test']}/images/train\nnames:\n{names}\n")
            model = YOLO("yolov8n.yaml")  # architecture only: trained from scratch
            model.train(data=str(data), epochs=epochs, imgsz=sets["train_size"], batch=16, device="cpu", workers=0,
                        seed=seed, deterministic=True, pretrained=False, amp=False, plots=False, val=False,
                        project=str(work / "runs"), name=key, exist_ok=True, verbose=False)
            scores = model.val(data=str(data), imgsz=320, batch=16, device="cpu", plots=False, verbose=False)
            results[key] = {"map50_95": round(100 * float(scores.box.map), 1),
                            "map50": round(100 * float(scores.box.map50), 1)}
            results_path.write_text(json.dumps(results, indent=2) + "\n")
            print(key, results[key], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["prepare", "train"])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    if args.mode == "prepare":
        prepare(args.run, args.work)
    else:
        train(args.work, args.epochs, args.seeds)


if __name__ == "__main__":
    main()
