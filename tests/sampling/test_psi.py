"""ψ: Tool 1 relaxed draws and their replay, circular means, discrete draws, the simplex, JSON, bad files."""

import json

import numpy as np
import pytest
import torch

from neuralsim.errors import UserError
from neuralsim.sampling.bins import ObjectDistribution
from neuralsim.sampling.init import PsiInit, circular_distance_deg, dominant_probs, init_psi
from neuralsim.sampling.psi import DTYPE, FactorNoise, FactorPsi, Psi, project_simplex


def azimuth(probs, dtype=DTYPE) -> FactorPsi:
    p = torch.tensor(probs, dtype=dtype)
    return FactorPsi(0.0, 360.0, torch.log(p).requires_grad_(True), circular=True)


def test_relaxed_replay_is_exact_with_and_without_grad():
    psi = init_psi(PsiInit(["o"], lighting=["a", "b"], kind="dominant", dominant={"o": {"azimuth": 5}}))
    obj = psi.objects["o"]
    noise = obj.draw_noise(32, torch.Generator().manual_seed(3))
    with torch.no_grad():
        first = obj.relaxed(noise, tau=0.1)
    again = obj.relaxed(noise, tau=0.1)
    for a, b in zip(first.tensors(), again.tensors()):
        assert torch.equal(a, b)
    part = obj.relaxed(noise.select(slice(5, 9)), tau=0.1)
    assert torch.equal(part.azimuth_deg, first.azimuth_deg[5:9])


def test_same_seed_same_draws_and_dtype_guard():
    f = azimuth([0.25] * 4)
    n1, n2 = f.draw_noise(8, torch.Generator().manual_seed(0)), f.draw_noise(8, torch.Generator().manual_seed(0))
    assert torch.equal(f.relaxed(n1, 0.1), f.relaxed(n2, 0.1))
    with pytest.raises(ValueError, match="one dtype"):
        azimuth([0.25] * 4, torch.float32).relaxed(n1, 0.1)


def test_circular_mean_of_first_and_last_bins_is_near_zero_not_180():
    f = azimuth([0.5, 0, 0, 0, 0, 0, 0, 0.5])  # bins centred at 22.5° and 337.5°
    n = 4
    # y = (½, 0, …, 0, ½) exactly: equal Gumbel noise on both bins and τ large enough to mix them evenly
    gumbel = torch.zeros(n, 8, dtype=DTYPE)
    noise = FactorNoise(gumbel, torch.full((n,), 0.5, dtype=DTYPE))
    values = f.relaxed(noise, tau=1.0)
    assert torch.all(circular_distance_deg(values, 0.0) < 1e-9)
    plain_mean = (22.5 + 337.5) / 2
    assert plain_mean == 180.0  # what a non-circular average would give


def test_relaxed_draws_stay_in_range_and_follow_bins_at_low_tau():
    f = azimuth([0.1, 0.2, 0.3, 0.4])
    noise = f.draw_noise(2000, torch.Generator().manual_seed(1))
    values = f.relaxed(noise, tau=0.01)
    assert torch.all((values >= 0) & (values < 360))
    hard = f.hard_bins(noise)
    bins = torch.floor(values / 90).long()
    assert (bins == hard).double().mean() > 0.97


def test_discrete_draws_match_probabilities_and_log_prob():
    psi = init_psi(PsiInit(["o"], kind="dominant", dominant={"o": {"azimuth": 2}}, p=0.6))
    obj = psi.objects["o"]
    params = obj.discrete(obj.draw_noise(20000, torch.Generator().manual_seed(2)))
    freq = torch.bincount(params.bins["azimuth"], minlength=8).double() / 20000
    assert torch.allclose(freq, obj.factors["azimuth"].probs().detach(), atol=0.015)
    assert torch.equal(torch.floor(params.azimuth_deg / 45).long(), params.bins["azimuth"])
    logp = obj.log_prob({f: b[:3] for f, b in params.bins.items()})
    expected = torch.log(obj.factors["azimuth"].probs()[params.bins["azimuth"][:3]])
    assert torch.allclose(logp, expected)


def test_project_simplex_against_brute_force():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        w = torch.randn(5, generator=g, dtype=DTYPE) * 2
        p = project_simplex(w)
        assert torch.all(p >= 0) and torch.isclose(p.sum(), torch.tensor(1.0, dtype=DTYPE))
        # optimality (KKT): w − p = τ·1 on the support, ≤ τ off it
        tau = (w - p)[p > 0]
        assert torch.allclose(tau, tau[0].expand_as(tau))
        assert torch.all((w - p)[p == 0] <= tau[0] + 1e-12)
    inside = torch.tensor([0.2, 0.3, 0.5], dtype=DTYPE)
    assert torch.allclose(project_simplex(inside), inside)


def test_init_dominant_and_uniform():
    assert np.allclose(dominant_probs(8, 5, 0.8), [0.2 / 7] * 5 + [0.8] + [0.2 / 7] * 2)
    psi = init_psi(PsiInit(["a", "b"], kind="dominant", dominant={"a": {"azimuth": 5}}))
    assert torch.allclose(psi.objects["a"].factors["azimuth"].probs()[5], torch.tensor(0.8, dtype=DTYPE))
    assert torch.allclose(psi.objects["b"].factors["azimuth"].probs(), torch.full((8,), 0.125, dtype=DTYPE))
    with pytest.raises(UserError, match="outside"):
        init_psi(PsiInit(["a"], kind="dominant", dominant={"a": {"azimuth": 8}}))


def test_json_round_trip_is_exact_and_reads_as_a_scene_distribution(tmp_path):
    psi = init_psi(PsiInit(["a"], lighting=["x", "y", "z"], kind="dominant", dominant={"a": {"azimuth": 1}}))
    with torch.no_grad():
        psi.objects["a"].factors["azimuth"].logits.add_(torch.linspace(-1, 1, 8, dtype=DTYPE))
        psi.objects["a"].lighting.param.copy_(torch.tensor([0.2, 0.3, 0.5], dtype=DTYPE))
    path = psi.save(tmp_path / "psi.json")
    back = Psi.load(path)
    for name, t in psi.parameters().items():
        assert torch.equal(t, back.parameters()[name]), name
    with torch.no_grad():  # a projected point sums to 1 only up to rounding; it must come back bit for bit
        psi.objects["a"].lighting.param.copy_(project_simplex(torch.tensor([0.9700530018065531, 0.707819864399788, 0.45938294312745087], dtype=DTYPE)))
    back = Psi.load(psi.save(tmp_path / "projected.json"))
    assert torch.equal(psi.objects["a"].lighting.param, back.objects["a"].lighting.param)
    ObjectDistribution.from_json(json.loads(path.read_text())["objects"]["a"], "scene")  # the bins.py form
    plain = {"objects": {"a": ObjectDistribution.uniform(4, ["x", "y"]).to_json()}}
    assert torch.allclose(Psi.from_json(plain).objects["a"].factors["azimuth"].probs(),
                          torch.full((4,), 0.25, dtype=DTYPE))


@pytest.mark.parametrize("azimuth, message", [
    ({"low": 0, "high": 360, "probs": [0.5, 0.4]}, "sum to 1"),
    ({"low": 0, "high": 180, "probs": [0.5, 0.5]}, "full turn"),
    ({"low": 0, "high": 360, "probs": [0.5, 0.5], "logits": [0.0, 3.0]}, "disagree"),
])
def test_bad_psi_json_is_one_clear_user_error(tmp_path, azimuth, message):
    path = tmp_path / "psi.json"
    path.write_text(json.dumps({"objects": {"mug": {"azimuth": azimuth}}}))
    with pytest.raises(UserError, match=message) as info:
        Psi.load(path)
    assert "\n" not in str(info.value) and "mug" in str(info.value)


@pytest.mark.parametrize("mug, message", [
    ({"azimuth": {"low": "zero", "high": 360, "probs": [1.0]}}, "objects.mug.azimuth.low: expected a number, got 'zero'"),
    ({"elevation": {"probs": "abc"}}, "objects.mug.elevation.probs: expected a list, got 'abc'"),
    ({"radius": {"probs": [1.0], "low": True}}, "objects.mug.radius.low: expected a number, got True"),
    ({"lighting": {"names": "studio", "weights": [1.0]}}, "objects.mug.lighting.names: expected a list, got 'studio'"),
    ({"lighting": {"names": ["a", "b"], "weights": [1.0]}},
     "objects.mug.lighting.weights: expected 2 weights, one per name, got [1.0]"),
    ({"lighting": {"names": ["a"], "weights": [1.0], "parameterisation": "soft"}},
     "objects.mug.lighting.parameterisation: expected 'simplex' or 'logits', got 'soft'"),
])
def test_wrong_types_in_a_psi_file_are_one_line_naming_the_field(tmp_path, mug, message):
    path = tmp_path / "psi.json"
    path.write_text(json.dumps({"objects": {"mug": mug}}))
    with pytest.raises(UserError) as info:
        Psi.load(path)
    assert str(info.value) == f"ψ file {path}: {message}"


def test_bad_psi_file_shape(tmp_path):
    path = tmp_path / "psi.json"
    path.write_text(json.dumps({"mug": {}}))
    with pytest.raises(UserError, match="objects"):
        Psi.load(path)
    with pytest.raises(UserError, match="Unknown"):
        init_psi(PsiInit(["a"])).set_trainable(["pose"])


@pytest.mark.parametrize("logits, message", [
    ([0.0, 0.0], "logits: expected 3 numbers, one per entry of weights"),
    ([0.0, "x", 1.0], r"logits\[1\]: expected a number, got 'x'"),
    ([0.0, 0.0, 5.0], "disagree"),
])
def test_bad_lighting_logits_are_one_clear_user_error(tmp_path, logits, message):
    lighting = {"names": ["x", "y", "z"], "weights": [0.2, 0.3, 0.5], "parameterisation": "logits", "logits": logits}
    path = tmp_path / "psi.json"
    path.write_text(json.dumps({"objects": {"mug": {"lighting": lighting}}}))
    with pytest.raises(UserError, match=message) as info:
        Psi.load(path)
    assert "\n" not in str(info.value) and "mug" in str(info.value)
    good = dict(lighting, logits=np.log([0.2, 0.3, 0.5]).tolist())
    path.write_text(json.dumps({"objects": {"mug": {"lighting": good}}}))
    assert torch.allclose(Psi.load(path).objects["mug"].lighting.weights(), torch.tensor([0.2, 0.3, 0.5], dtype=DTYPE))


def test_every_object_must_mix_the_same_lighting_in_the_same_order():
    psi = init_psi(PsiInit(["a", "b"], lighting=["x", "y"]))
    assert psi.lighting_names() == ["x", "y"]
    swapped = init_psi(PsiInit(["b"], lighting=["y", "x"]))
    psi.objects["b"] = swapped.objects["b"]
    with pytest.raises(UserError, match="same order"):
        psi.lighting_names()


def test_set_trainable_picks_factors_of_the_named_objects_only():
    psi = init_psi(PsiInit(["a", "b", "c"], lighting=["x", "y"])).set_trainable(["azimuth", "lighting"], ["a", "c"])
    assert sorted(psi.trainable()) == ["a/azimuth", "a/lighting", "c/azimuth", "c/lighting"]
    assert sorted(psi.set_trainable(["radius"]).trainable()) == ["a/radius", "b/radius", "c/radius"]  # None: all
    with pytest.raises(UserError, match=r"no distribution for object\(s\) \['d'\]"):
        psi.set_trainable(["azimuth"], ["a", "d"])
