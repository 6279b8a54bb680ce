"""Export: render a labelled COCO dataset from fields under a ψ (images, boxes, masks, render parameters),
so any detector can be trained on what ψ learned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neuralsim.bilevel.field_source import FieldSource, SourceConfig, load_fields
from neuralsim.color import to_uint8
from neuralsim.data.coco import CocoBuilder
from neuralsim.errors import UserError
from neuralsim.runtime import atomic_save_png, derive_seed, file_stem, progress, staged_output_dir, to_plain
from neuralsim.sampling.psi import Psi


def export_dataset(fields: dict[str, str | Path], psi_path: str | Path, n_per_object: int, out: str | Path,
                   config: SourceConfig, seed: int = 0, overwrite: bool = False) -> Path:
    """`n_per_object` images of each object of ψ, drawn discretely from ψ, into the COCO folder `out`."""
    if n_per_object < 1:
        raise UserError(f"--n must be at least 1 image per object, got {n_per_object}.")
    psi = Psi.load(psi_path)
    names = list(psi.objects)
    missing = [o for o in names if o not in fields]
    if missing:
        raise UserError(f"ψ {psi_path} has object(s) {missing} but no field was given for them.")
    lighting = psi.lighting_names()
    source = FieldSource(load_fields({o: fields[o] for o in names}), names, lighting, config)
    coco = CocoBuilder(names)
    generator = torch.Generator().manual_seed(derive_seed(seed, "export"))
    with staged_output_dir(out, overwrite) as stage, progress() as bar:
        (stage / "images").mkdir()
        task = bar.add_task("render dataset", total=n_per_object * len(names))
        for obj in names:
            params = psi.objects[obj].discrete(psi.objects[obj].draw_noise(n_per_object, generator)).detach()
            for j in range(n_per_object):
                image, alpha = source.render_one(obj, params, j)
                file_name = f"images/{file_stem(obj)}_{j:05d}.png"
                atomic_save_png(stage / file_name, to_uint8(image.permute(1, 2, 0).numpy()))
                render = {"object": obj, "azimuth_deg": float(params.azimuth_deg[j]),
                          "elevation_deg": float(params.elevation_deg[j]), "radius": float(params.radius[j]),
                          "lighting": dict(zip(lighting, params.lighting[j].tolist())),
                          "bins": {f: int(b[j]) for f, b in params.bins.items()}}
                image_id = coco.add_image(file_name, config.size, config.size, render=[render])
                label = source.label(obj, alpha)
                if label.box_xyxy is not None:
                    coco.add_annotation(image_id, obj, label.box_xyxy, label.mask.astype(np.uint8), render=render)
                bar.advance(task)
        coco.save(stage / "annotations.json", psi=str(psi_path), source=to_plain(config), seed=seed)
    return Path(out)
