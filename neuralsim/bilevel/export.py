"""Export: render a labelled dataset from fields under a ψ (images, boxes with their visibility, masks, render
parameters) at any size, as COCO and in the YOLO layout, so any detector can be trained on what ψ learned."""

from __future__ import annotations

from pathlib import Path

import torch

from neuralsim.bilevel.field_source import FieldSource, SourceConfig, load_fields
from neuralsim.color import to_uint8
from neuralsim.data.coco import CocoBuilder
from neuralsim.errors import UserError
from neuralsim.runtime import atomic_save_png, derive_seed, file_stem, progress, staged_output_dir, to_plain
from neuralsim.sampling.psi import Psi

FORMATS = ("coco", "yolo")


def export_dataset(fields: dict[str, str | Path], psi: Psi | str | Path, quotas: int | dict[str, int],
                   out: str | Path, config: SourceConfig, seed: int = 0, overwrite: bool = False,
                   formats: tuple[str, ...] = ("coco",), device: str | torch.device = "cpu") -> Path:
    """Images drawn discretely from ψ into the folder `out`: `quotas` images showing each object of ψ as their own
    (a number for every object, or one per object), each image with up to `config.objects_per_image` objects.

    `out` holds the COCO set (images/ + annotations.json, every box with its visibility and the render parameters
    of its object); with "yolo" among `formats` also `yolo/` (images/, labels/, data.yaml)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"Unknown export format(s) {unknown}; choose from {', '.join(FORMATS)}.")
    psi_name = str(psi) if not isinstance(psi, Psi) else None
    psi = psi if isinstance(psi, Psi) else Psi.load(psi)
    names = list(psi.objects)
    counts = {o: quotas for o in names} if isinstance(quotas, int) else dict(quotas)
    strays = [o for o in counts if o not in psi.objects]
    if strays:
        raise UserError(f"Quotas name object(s) {strays} that ψ does not have ({', '.join(names)}).")
    if any(counts.get(o, 0) < 0 for o in names) or sum(counts.get(o, 0) for o in names) < 1:
        raise UserError(f"The quotas must be ≥ 0 images per object and at least 1 in all, got {counts}.")
    missing = [o for o in names if o not in fields]
    if missing:
        raise UserError(f"ψ has object(s) {missing} but no field was given for them.")
    source = FieldSource(load_fields({o: fields[o] for o in names}, device), names, psi.lighting_names(), config,
                         others=psi)
    coco = CocoBuilder(names)
    generator = torch.Generator().manual_seed(derive_seed(seed, "export"))
    with staged_output_dir(out, overwrite) as stage, progress() as bar:
        (stage / "images").mkdir()
        task = bar.add_task("render dataset", total=sum(counts.get(o, 0) for o in names))
        for obj in names:
            n = counts.get(obj, 0)
            params = psi.objects[obj].discrete(psi.objects[obj].draw_noise(n, generator)).detach()
            for j in range(n):
                image, labels = source.render_one(obj, params, j)
                file_name = f"images/{file_stem(obj)}_{j:05d}.png"
                atomic_save_png(stage / file_name, to_uint8(image.permute(1, 2, 0).numpy()))
                scene = source.scene_record(obj, params, j)
                image_id = coco.add_image(file_name, config.size, config.size, render=scene)
                record = {r["object"]: r for r in scene}
                for name, box, mask, seen in zip(labels.objects, labels.boxes, labels.masks, labels.visibility):
                    coco.add_annotation(image_id, name, box, mask, visibility=round(seen, 4), render=record[name])
                bar.advance(task)
        coco.save(stage / "annotations.json", psi_file=psi_name, psi=psi.to_json(), source=to_plain(config), seed=seed)
        if "yolo" in formats:
            from neuralsim.data.yolo import write_yolo

            write_yolo(stage, stage / "yolo")
    return Path(out)

