"""Labels of images with several objects: each object's box is its visible part, the pixels it would cover alone
give its visibility, and an object hidden beyond `min_visibility` gets no box."""

from __future__ import annotations

import torch

from neuralsim.bilevel.field_source import FieldSource, SourceConfig
from neuralsim.render import Placement, render_scene
from neuralsim.sampling.init import PsiInit, init_psi

SIZE, FOV_DEG = 32, 40.0


def _source(make_field, min_visibility: float) -> FieldSource:
    fields = {"front": make_field(torch.float64), "back": make_field(torch.float64, seed=1)}
    names = fields["front"].appearance.names
    psi = init_psi(PsiInit(objects=list(fields), lighting=list(names)))
    return FieldSource(fields, list(fields), names, SourceConfig(size=SIZE, min_visibility=min_visibility,
                                                                 backgrounds=1), others=psi)


def _scene(source: FieldSource, back_shift: float):
    """"front" near the camera at the centre, "back" twice as far, moved right by `back_shift` of its view's width."""
    f, b = source.fields["front"], source.fields["back"]
    half = torch.tan(torch.deg2rad(torch.tensor(FOV_DEG / 2, dtype=torch.float64)))
    far = 7.0
    placements = [Placement(f, 30.0, 20.0, 3.5, 0), Placement(b, 60.0, 20.0, far, 0, (float(back_shift * 2 * half * far), 0.0))]
    with torch.no_grad():
        return render_scene(placements, SIZE, FOV_DEG)


def test_an_object_alone_is_wholly_visible(make_field):
    source = _source(make_field, 0.25)
    out = _scene(source, 0.3)
    torch.testing.assert_close(out.object_coverage[0], out.object_alpha[0])  # nothing in front of "front"
    assert (out.object_coverage >= out.object_alpha - 1e-12).all()
    labels = source.labels(out, ["front", "back"])
    assert labels.objects[0] == "front" and labels.own and labels.visibility[0] == 1.0


def test_a_partly_hidden_object_is_boxed_by_its_visible_part(make_field):
    source = _source(make_field, 0.0)
    out = _scene(source, 0.15)  # "back" half behind "front"
    labels = source.labels(out, ["front", "back"])
    assert labels.objects == ["front", "back"]
    alone = source.labels(type(out)(out.rgb, out.alpha, out.depth, out.object_coverage, out.object_coverage),
                          ["front", "back"])
    seen, whole = labels.boxes[1], alone.boxes[1]
    assert 0.0 < labels.visibility[1] < 0.9
    assert seen[0] > whole[0] and seen[2] == whole[2]  # its left part is hidden, its right edge is its own
    assert labels.masks[1].sum() < alone.masks[1].sum()


def test_the_visibility_filter_drops_an_object_hidden_beyond_it(make_field):
    out = _scene(_source(make_field, 0.0), 0.15)  # "back" about 40 % hidden
    kept = _source(make_field, 0.5).labels(out, ["front", "back"])
    assert kept.objects == ["front", "back"] and 0.5 < kept.visibility[1] < 0.7
    dropped = _source(make_field, 0.7).labels(out, ["front", "back"])
    assert dropped.objects == ["front"] and dropped.own
    hidden = _scene(_source(make_field, 0.0), 0.05)  # wholly behind "front": no box at any threshold
    assert _source(make_field, 0.0).labels(hidden, ["front", "back"]).objects == ["front"]
