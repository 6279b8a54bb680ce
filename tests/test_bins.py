import numpy as np
import pytest

from neuralsim.errors import UserError
from neuralsim.sampling.bins import FactorBins, ObjectDistribution, check_probs
from neuralsim.schema import Invalid


def test_sampling_respects_bins():
    fb = FactorBins(0.0, 360.0, np.array([0.0, 1.0, 0.0, 0.0]), circular=True)
    values, bins = fb.sample(np.random.default_rng(0), 200)
    assert (bins == 1).all() and ((values >= 90) & (values < 180)).all()
    assert fb.bin_of(np.array([-10.0, 370.0, 95.0])).tolist() == [3, 0, 1]
    np.testing.assert_allclose(fb.centres, [45, 135, 225, 315])


def test_empirical_frequencies_follow_probs():
    fb = FactorBins(3.0, 6.0, np.array([0.2, 0.5, 0.3]))
    _, bins = fb.sample(np.random.default_rng(1), 20000)
    np.testing.assert_allclose(np.bincount(bins, minlength=3) / 20000, [0.2, 0.5, 0.3], atol=0.015)


@pytest.mark.parametrize("probs,message", [([0.5, -0.1, 0.6], "≥ 0"), ([0.3, 0.3], "sum to 1 .these sum to 0.6"),
                                           ([], "at least one"), ([float("nan"), 1.0], "finite")])
def test_bad_probabilities(probs, message):
    with pytest.raises(Invalid, match=message):
        check_probs(probs, "probs")


def test_json_round_trip_and_validation():
    d = ObjectDistribution.uniform(8, ["studio", "dim_top"])
    back = ObjectDistribution.from_json(d.to_json(), "x")
    np.testing.assert_allclose(back.factors["azimuth"].probs, np.full(8, 1 / 8))
    assert back.lighting.names == ["studio", "dim_top"]
    with pytest.raises(UserError, match=r"^x: azimuth.high: expected low \+ 360 = 360 \(azimuth bins cover a full turn"):
        ObjectDistribution.from_json({"azimuth": {"low": 0, "high": 180, "probs": [1.0]}}, "x")
    with pytest.raises(UserError, match=r"^x: zoom: unknown setting \(known: azimuth, elevation, radius, lighting\)"):
        ObjectDistribution.from_json({"zoom": {"probs": [1.0]}}, "x")
