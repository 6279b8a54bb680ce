"""The baselines a learned ψ is judged against: tuned domain randomisation (ranges narrowed from the validation
boxes by a written rule) and the example's oracle (its photos' distribution in the training camera's terms)."""

from pathlib import Path

import numpy as np
import pytest

from neuralsim.data.coco import CocoSet, DetectionSample
from neuralsim.examples import EXAMPLE_LIGHTING, oracle_distributions, target_distributions
from neuralsim.learn.tuned import tuned_psi
from neuralsim.sampling.init import PsiInit, init_psi

RANGES = {"azimuth": (0.0, 360.0), "elevation": (0.0, 60.0), "radius": (5.0, 15.0)}
BINS = {"azimuth": 8, "elevation": 4, "radius": 4}
C = 120.0  # box size × radius of the calibration
ASPECTS = [0.5, 0.8, 1.2, 2.0]  # median box aspect of each elevation bin


def val_set(radii, aspects, label=1):
    """One photo per box: an object at each radius (size C/r) with the given aspect h/w."""
    samples = []
    for i, (r, a) in enumerate(zip(radii, aspects)):
        size = C / r
        w, h = size / np.sqrt(a), size * np.sqrt(a)
        samples.append(DetectionSample(Path(f"{i}.png"), 64, 64, np.array([[2.0, 2.0, 2.0 + w, 2.0 + h]]),
                                       np.array([label]), i + 1))
    return CocoSet(Path("val.json"), Path("."), [], samples)


def tune(radii, aspects):
    psi0 = init_psi(PsiInit(objects=["box"], bins=BINS, ranges=RANGES, lighting=list(EXAMPLE_LIGHTING)))
    calibration = {"box": {"c": C, "elevation_aspect": ASPECTS}}
    psi, record = tuned_psi(psi0, calibration, val_set(radii, aspects), ["box"])
    return psi.probabilities()["box"], record["box"]


def test_near_boxes_narrow_distance_to_the_near_bins_and_aspect_picks_the_elevation():
    rng = np.random.default_rng(0)
    probs, record = tune(rng.uniform(5.5, 9.5, 40), rng.uniform(1.1, 1.3, 40))
    assert probs["radius"][2] + probs["radius"][3] < 0.05 < probs["radius"][0]
    assert 5.0 <= record["radius"][0] < 6.5 and 8.5 < record["radius"][1] < 10.0
    np.testing.assert_allclose(probs["elevation"], [0, 0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(probs["azimuth"], np.full(8, 1 / 8), atol=1e-6)  # a box says nothing of it
    np.testing.assert_allclose(probs["lighting"], np.full(4, 1 / 4), atol=1e-6)


def test_far_boxes_move_distance_the_other_way():
    rng = np.random.default_rng(1)
    probs, _ = tune(rng.uniform(11.0, 14.5, 40), rng.uniform(0.45, 0.9, 40))
    assert probs["radius"][0] + probs["radius"][1] < 0.05 < probs["radius"][3]
    assert probs["elevation"][0] > 0 and probs["elevation"][1] > 0 and probs["elevation"][3] < 1e-6


def test_a_narrow_spread_keeps_at_least_one_bin_and_few_boxes_keep_dr():
    probs, record = tune([7.0] * 10, [1.2] * 10)
    assert record["radius"][1] - record["radius"][0] == pytest.approx(2.5)
    assert sum(probs["radius"]) == pytest.approx(1.0)
    probs, record = tune([7.0, 7.0], [1.2, 1.2])
    np.testing.assert_allclose(probs["radius"], np.full(4, 0.25), atol=1e-6)
    assert "too few" in record["kept"]


def test_the_oracle_moves_the_photos_radius_nearer_by_the_lens_ratio_and_keeps_the_rest():
    ratio = np.tan(np.radians(18)) / np.tan(np.radians(20))  # photos' 36° lens against the renders' 40°
    target, oracle = target_distributions(), oracle_distributions(40.0)
    for obj in target:
        radius = oracle[obj].factors["radius"].probs
        assert radius.sum() == pytest.approx(1.0)
        # the photos' uniform 5–10 becomes uniform on 5·ratio–10·ratio; below 5 goes to the first bin
        np.testing.assert_allclose(radius, [(7.5 - 5 * ratio) / (5 * ratio), (10 * ratio - 7.5) / (5 * ratio), 0, 0])
        for f in ("azimuth", "elevation"):
            np.testing.assert_array_equal(oracle[obj].factors[f].probs, target[obj].factors[f].probs)
    same = oracle_distributions(36.0)
    for obj in target:
        np.testing.assert_allclose(same[obj].factors["radius"].probs, target[obj].factors["radius"].probs, atol=1e-12)
