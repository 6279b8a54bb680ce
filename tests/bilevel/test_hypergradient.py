"""The hypergradient estimators on the toy problem, where everything is exact: pathwise (Neural-Sim) against
finite differences of L_val(θ*(ψ)); score function and influence against the exact expected gradient; alone and
with another object in every image (held, as a `FieldSource` holds the others)."""

import dataclasses

import pytest
import torch

from neuralsim.bilevel.data import draw_training_set, full_image_vjp
from neuralsim.bilevel.estimators import method_config
from neuralsim.bilevel.estimators.autosim import score_function
from neuralsim.bilevel.estimators.base import solve_v, zero_missing
from neuralsim.bilevel.estimators.influence import influence, probe_bin_means
from neuralsim.bilevel.estimators.nso import NSOConfig, pathwise
from neuralsim.bilevel.inverse_hvp import InverseHVPConfig, inverse_hvp
from neuralsim.bilevel.toy import exact_expected_gradient, fit
from neuralsim.clock import PhaseClock
from neuralsim.errors import UserError
from neuralsim.sampling.psi import RenderParams

EXACT = InverseHVPConfig(damping=0.0, iterations=200, tol=1e-13)
COUNTS = {"a": 12, "b": 12}


def flat(grads, names):
    return torch.cat([grads[n].reshape(-1) for n in names])


def agreement(got, want):
    cos = float(torch.nn.functional.cosine_similarity(got, want, dim=0))
    return cos, float((got - want).norm() / want.norm())


def val_loss_at_retrained_theta(toy, psi, train):
    """L_val(θ*(ψ)) with the training set replayed from its fixed noise, θ* by Newton to convergence."""
    with torch.no_grad():
        parts = [toy.render(d.obj, train.replay(psi, d, slice(None))) for d in train.draws]
        theta = fit(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), toy.config.l2)
        return toy.val_loss(theta)


def finite_difference(toy, psi, train, delta=1e-5):
    grads = {}
    for name, leaf in psi.trainable().items():
        g = torch.zeros_like(leaf)
        for i in range(leaf.numel()):
            with torch.no_grad():
                leaf[i] += delta
            plus = val_loss_at_retrained_theta(toy, psi, train)
            with torch.no_grad():
                leaf[i] -= 2 * delta
            minus = val_loss_at_retrained_theta(toy, psi, train)
            with torch.no_grad():
                leaf[i] += delta
            g[i] = (plus - minus) / (2 * delta)
        grads[name] = g
    return grads


def hypergradient(toy, method, psi, train, task, generator):
    """v exactly, then `method`'s estimate of every trainable leaf."""
    inverse = solve_v(task, EXACT, PhaseClock())
    grads = method.estimate(psi, train, task, inverse.v, render=toy.render, render_vjp=full_image_vjp(toy.render),
                            generator=generator, clock=PhaseClock(), replay_batch=4)
    return zero_missing(psi, grads), inverse


def setup(toy, tau, seed=0, trainable=("azimuth", "lighting")):
    psi = toy.psi(trainable)
    train = draw_training_set(psi, COUNTS, toy.render, torch.Generator().manual_seed(seed), tau)
    theta = fit(train.images, train.targets, toy.config.l2)
    return psi, train, toy.task(theta, train.images, train.targets), theta


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_pathwise_matches_finite_differences_of_the_retrained_objective(toy, tau):
    psi, train, task, _ = setup(toy, tau)
    grads, inverse = hypergradient(toy, NSOConfig(tau=tau), psi, train, task, torch.Generator())
    assert inverse.residual < 1e-10
    fd = finite_difference(toy, psi, train)
    names = list(fd)
    cos, rel = agreement(flat(grads, names), flat(fd, names))
    assert cos >= 0.95 and rel <= 0.10, (cos, rel)
    assert cos > 0.9999 and rel < 1e-4  # in float64 with an exact θ* the agreement is in fact much closer


def patchwise_vjp(render, patch=5):
    """A Tool 3 style hook: the image's pixels in patches, each patch's VJP computed alone and summed."""

    def vjp(obj, params, upstream):
        total = None
        for start in range(0, upstream[0].numel(), patch):
            leaves = [t.detach().requires_grad_(True) for t in params.tensors()]
            images, _ = render(obj, params.with_tensors(leaves))
            piece = images.flatten(1)[:, start:start + patch]
            grads = torch.autograd.grad(piece, leaves, upstream.flatten(1)[:, start:start + patch], allow_unused=True)
            grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        return params.with_tensors(total)

    return vjp


def test_patchwise_hook_and_replay_batches_give_the_same_pathwise_gradient(toy):
    psi, train, task, _ = setup(toy, tau=0.3)
    v = inverse_hvp(task.hvp, task.val_grad(), EXACT).v
    reference = pathwise(psi, train, task, v, full_image_vjp(toy.render))
    patched = pathwise(psi, train, task, v, patchwise_vjp(toy.render), replay_batch=5)
    for name in reference:
        torch.testing.assert_close(patched[name], reference[name])


def test_score_function_is_unbiased_and_influence_is_exact(toy):
    psi, train, task, theta = setup(toy, tau=None, trainable=("azimuth",))
    v = inverse_hvp(task.hvp, task.val_grad(), EXACT).v
    exact = exact_expected_gradient(psi, toy.render, theta, v, COUNTS)
    names = list(exact)
    want = flat(exact, names)

    # many draws: one large discrete set with the counts' proportions is the mean of many small ones
    big = draw_training_set(psi, {o: 100 * n for o, n in COUNTS.items()}, toy.render, torch.Generator().manual_seed(5), None)
    sf = flat(score_function(psi, big, task, v), names)
    cos, rel = agreement(sf, want)
    assert cos >= 0.97 and rel <= 0.25, (cos, rel)

    for paired in (False, True):
        inf = flat(influence(psi, train, task, v, toy.render, torch.Generator().manual_seed(6), probes_per_bin=16,
                             paired_probes=paired), names)
        cos, rel = agreement(inf, want)
        assert cos >= 0.999 and rel <= 0.03, (paired, cos, rel)


@pytest.mark.parametrize("paired", [False, True])
def test_paired_probes_share_everything_but_the_bin(toy, paired):
    psi, train, task, _ = setup(toy, tau=None, trainable=("azimuth",))
    v = task.val_grad()
    obj = psi.objects["a"]
    seen = []

    def recording(name, params):
        seen.append(params)
        return toy.render(name, params)

    probes, k = 3, obj.factors["azimuth"].k
    m = probe_bin_means(obj, "azimuth", "a", recording, task, v, probes, torch.Generator().manual_seed(0),
                        paired=paired)
    assert m.shape == (k,) and torch.isfinite(m).all()
    (params,) = seen
    assert (params.bins["azimuth"] == torch.arange(k).repeat_interleave(probes)).all()
    width = 360.0 / k
    start = obj.factors["azimuth"].value_in_bin(params.bins["azimuth"], torch.zeros(len(params), dtype=v.dtype))
    offset = torch.remainder(params.azimuth_deg - start, 360.0)  # within the bin, stratified by probe index
    stratum = torch.arange(probes).repeat(k)
    assert ((offset >= width / probes * stratum - 1e-6) & (offset < width / probes * (stratum + 1) + 1e-6)).all()
    shared = [params.elevation_deg, params.radius, params.placement, offset]
    same = [torch.allclose(t.reshape(k, probes, -1), t.reshape(k, probes, -1)[:1].expand(k, -1, -1), atol=1e-9)
            for t in shared]
    assert same == [paired] * 4, same


def test_every_method_gives_every_trainable_leaf(toy):
    for method in ("nso", "autosim", "influence"):
        config = method_config(method)
        psi = toy.psi()
        train = draw_training_set(psi, COUNTS, toy.render, torch.Generator().manual_seed(1), config.draw_tau)
        theta = fit(train.images, train.targets, toy.config.l2)
        grads, _ = hypergradient(toy, config, psi, train, toy.task(theta, train.images, train.targets),
                                 torch.Generator().manual_seed(2))
        assert set(grads) == set(psi.trainable())
        assert all(torch.isfinite(g).all() for g in grads.values())
        if method == "influence":  # lighting by the pathwise gradient through the renderer
            assert grads["a/lighting"].abs().sum() > 0
        if method == "autosim":  # lighting is not sampled: the score function cannot see it
            assert grads["a/lighting"].abs().sum() == 0


def test_score_function_refuses_relaxed_draws_and_bad_config(toy):
    psi, train, task, _ = setup(toy, tau=0.1)
    with pytest.raises(ValueError, match="discrete"):
        score_function(psi, train, task, torch.zeros(25, dtype=torch.float64))
    with pytest.raises(UserError, match="Unknown method 'magic'"):
        method_config("magic")
    with pytest.raises(UserError, match="tau"):
        NSOConfig(tau=0.0)


def test_render_params_select_keeps_bins():
    p = RenderParams(*(torch.arange(4.0) for _ in range(3)), torch.ones(4, 2), {"azimuth": torch.arange(4)})
    assert torch.equal(p.select(slice(1, 3)).bins["azimuth"], torch.tensor([1, 2]))


def test_two_psi_drawn_from_one_seed_share_every_random_number(toy):
    """The paired retraining's premise (ψ₀ against a learned ψ on the same random numbers): the noise does not depend
    on ψ, so an object whose ψ is the same gets the same images, and one whose ψ differs gets other images from the
    same Gumbel noise, jitter and placements."""
    from neuralsim.sampling.psi import Psi

    first = toy.psi()
    second = Psi({"a": first.objects["a"], "b": toy.psi(dominant_bin=1).objects["b"]})
    a, b = (draw_training_set(psi, COUNTS, toy.render, torch.Generator().manual_seed(3), None) for psi in (first, second))
    for da, db in zip(a.draws, b.draws):
        assert torch.equal(da.noise.placement, db.noise.placement)
        assert all(torch.equal(da.noise.factors[f].gumbel, db.noise.factors[f].gumbel) for f in da.noise.factors)
    rows_a, rows_b = a.draws[0].rows, a.draws[1].rows
    assert torch.equal(a.images[rows_a], b.images[rows_a])
    assert not torch.equal(a.images[rows_b], b.images[rows_b])


# ----------------------------------------------------------------------------- images with several objects


@pytest.fixture(scope="module")
def toy_others():
    """The toy whose every training image also shows the next object, held where its placement noise puts it."""
    from neuralsim.bilevel.toy import ToyConfig, toy_problem

    return toy_problem(ToyConfig(others=True))


def test_other_objects_change_the_images_and_stay_out_of_the_gradient(toy, toy_others):
    psi = toy.psi()
    train = draw_training_set(psi, COUNTS, toy.render, torch.Generator().manual_seed(0), 0.3)
    crowded = draw_training_set(psi, COUNTS, toy_others.render, torch.Generator().manual_seed(0), 0.3)
    assert not torch.allclose(train.images, crowded.images)
    params = crowded.replay(psi, crowded.draws[0], slice(0, 2))
    moved = dataclasses.replace(params, placement=params.placement.flip(0))  # other objects, same own object
    a, b = (toy_others.render("a", p)[0] for p in (params, moved))
    assert not torch.allclose(a, b)
    (grad,) = torch.autograd.grad(a.sum(), psi.objects["a"].factors["azimuth"].logits)
    again = crowded.replay(psi, crowded.draws[0], slice(0, 2))
    (own,) = torch.autograd.grad(toy.render("a", again)[0].sum(), psi.objects["a"].factors["azimuth"].logits)
    torch.testing.assert_close(grad, 0.6 * own)  # only the own object's 0.6 carries ψ's gradient


def test_pathwise_matches_finite_differences_with_other_objects_in_the_images(toy_others):
    psi, train, task, _ = setup(toy_others, 0.3)
    grads, inverse = hypergradient(toy_others, NSOConfig(tau=0.3), psi, train, task, torch.Generator())
    fd = finite_difference(toy_others, psi, train)
    names = list(fd)
    cos, rel = agreement(flat(grads, names), flat(fd, names))
    assert inverse.residual < 1e-10 and cos > 0.9999 and rel < 1e-4, (cos, rel)


def test_influence_and_score_function_are_exact_with_other_objects_in_the_images(toy_others):
    psi, train, task, theta = setup(toy_others, tau=None, trainable=("azimuth",))
    v = inverse_hvp(task.hvp, task.val_grad(), EXACT).v
    exact = exact_expected_gradient(psi, toy_others.render, theta, v, COUNTS, points=64)
    names = list(exact)
    want = flat(exact, names)
    big = draw_training_set(psi, {o: 100 * n for o, n in COUNTS.items()}, toy_others.render,
                            torch.Generator().manual_seed(5), None)
    cos, rel = agreement(flat(score_function(psi, big, task, v), names), want)
    assert cos >= 0.97 and rel <= 0.25, (cos, rel)
    inf = flat(influence(psi, train, task, v, toy_others.render, torch.Generator().manual_seed(6), probes_per_bin=64,
                         paired_probes=True), names)
    cos, rel = agreement(inf, want)
    assert cos >= 0.999 and rel <= 0.03, (cos, rel)
