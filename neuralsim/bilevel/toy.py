"""A problem small enough to be exact, for verifying the hypergradient estimators: tiny textures that turn
smoothly with the azimuth under a few lighting conditions (the 'renderer') and an L2-regularised logistic
'detector' whose inner optimum is unique and found by Newton's method."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from neuralsim.bilevel.task import AutogradTask
from neuralsim.sampling.init import PsiInit, init_psi
from neuralsim.sampling.psi import DTYPE, Psi, RenderParams


@dataclass
class ToyConfig:
    objects: tuple[str, ...] = ("a", "b")  # object o has class label o's index (two objects: logistic)
    height: int = 2
    width: int = 4
    lights: tuple[str, ...] = ("day", "dusk")
    l2: float = 0.05  # weight of (l2/2)‖θ‖² in every image's loss
    sharpness: float = 2.0  # how strongly a pixel responds to the view
    others: bool = False  # each image also shows the next object, turned by its placement noise (held: no gradient)
    seed: int = 0


class ToyRenderer:
    """render(obj, params) → (images (n, 3, H, W) in [0, 1], labels (n,)), differentiable in azimuth and lighting.
    Pixel p of object o under light l: sigmoid(gain_l · s · cos(φ − α_p) · σ_{o,p} + offset_l). With `others`, an
    image with placement noise u is 0.6 · its own object + 0.4 · the next object at azimuth 360°·u₀ in the first light,
    a part that does not depend on ψ (as the other objects of a `FieldSource` image, which are held)."""

    def __init__(self, config: ToyConfig):
        g = torch.Generator().manual_seed(config.seed)
        self.config = config
        d = 3 * config.height * config.width
        self.phase = torch.rand(d, generator=g, dtype=DTYPE) * 2 * math.pi  # α_p, (d,)
        self.sign = {o: torch.randint(0, 2, (d,), generator=g).to(DTYPE) * 2 - 1 for o in config.objects}
        n_lights = len(config.lights)
        self.gain = torch.linspace(1.0, 0.4, n_lights, dtype=DTYPE)  # (L,)
        self.offset = torch.linspace(0.0, -1.0, n_lights, dtype=DTYPE)  # (L,)

    def _pixels(self, obj: str, azimuth_deg: Tensor, lighting: Tensor) -> Tensor:
        phi = torch.deg2rad(azimuth_deg)[:, None]  # (n, 1)
        z = self.config.sharpness * torch.cos(phi - self.phase) * self.sign[obj]  # (n, d)
        per_light = torch.sigmoid(self.gain[:, None, None] * z + self.offset[:, None, None])  # (L, n, d)
        return torch.einsum("nl,lnd->nd", lighting, per_light)  # (n, d)

    def __call__(self, obj: str, params: RenderParams) -> tuple[Tensor, Tensor]:
        c = self.config
        x = self._pixels(obj, params.azimuth_deg, params.lighting)
        if c.others and params.placement is not None:
            other = c.objects[(c.objects.index(obj) + 1) % len(c.objects)]
            daylight = torch.zeros_like(params.lighting.detach())
            daylight[:, 0] = 1.0
            x = 0.6 * x + 0.4 * self._pixels(other, 360.0 * params.placement[:, 0], daylight)
        labels = torch.full((len(x),), float(c.objects.index(obj)), dtype=DTYPE)
        return x.reshape(len(x), 3, c.height, c.width), labels


def logistic_loss(params: dict[str, Tensor], images: Tensor, targets: Tensor, l2: float) -> Tensor:
    """Mean over images of BCE(w·x + b, y) + (l2/2)‖θ‖²."""
    logits = images.flatten(1) @ params["weight"] + params["bias"]  # (n,)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    return bce + 0.5 * l2 * (params["weight"].square().sum() + params["bias"].square())


def features(images: Tensor) -> Tensor:
    """[x, 1] per image, (n, d + 1)."""
    return torch.cat([images.flatten(1), torch.ones(len(images), 1, dtype=images.dtype)], dim=1)


def per_image_grads(theta: Tensor, images: Tensor, targets: Tensor, l2: float) -> Tensor:
    """Closed-form ∇θ l(x_j, θ), (n, d + 1), θ = [weight, bias] flattened."""
    f = features(images)
    return (torch.sigmoid(f @ theta) - targets)[:, None] * f + l2 * theta


def fit(images: Tensor, targets: Tensor, l2: float, iterations: int = 50) -> Tensor:
    """θ* = argmin of the mean training loss, by Newton's method to machine precision; (d + 1,)."""
    f = features(images)
    theta = torch.zeros(f.shape[1], dtype=f.dtype)
    for _ in range(iterations):
        s = torch.sigmoid(f @ theta)
        grad = f.T @ (s - targets) / len(f) + l2 * theta
        if grad.norm() < 1e-13:
            break
        hess = (f.T * (s * (1 - s))) @ f / len(f) + l2 * torch.eye(len(theta), dtype=f.dtype)
        theta = theta - torch.linalg.solve(hess, grad)
    return theta


def as_params(theta: Tensor) -> dict[str, Tensor]:
    return {"weight": theta[:-1], "bias": theta[-1]}


def target_params(psi: Psi, obj: str, azimuth_bin: int, light: int, n: int) -> RenderParams:
    """n validation views of `obj`: azimuths evenly through one bin, one lighting condition."""
    factor = psi.objects[obj].factors["azimuth"]
    u = (torch.arange(n, dtype=DTYPE) + 0.5) / n
    azimuth = factor.value_in_bin(torch.full((n,), azimuth_bin), u)
    lighting = torch.nn.functional.one_hot(torch.tensor(light), len(psi.objects[obj].lighting.names)).to(DTYPE)
    ones = torch.ones(n, dtype=DTYPE)
    return RenderParams(azimuth, ones, ones, lighting.expand(n, -1))


def exact_expected_gradient(psi: Psi, render: ToyRenderer, theta: Tensor, v: Tensor, counts: dict[str, int],
                            points: int = 256) -> dict[str, Tensor]:
    """The exact expected hypergradient for the azimuth logits at fixed θ and v: with
    m_i = E[∇θ l(x, θ)·v | azimuth in bin i] by the midpoint rule (over the other object's turn too, with `others`),
    dL/dp_i = −(n_o/N) m_i, then softmax's Jacobian (diag p − p pᵀ) applied by hand (an independent check of the
    autograd path)."""
    total = sum(counts.values())
    turns = points if render.config.others else 1  # midpoints of the placement noise u₀
    out = {}
    for obj, n_o in counts.items():
        factor = psi.objects[obj].factors["azimuth"]
        k = factor.k
        n = k * points * turns
        bins = torch.arange(k).repeat_interleave(points * turns)
        u = ((torch.arange(points, dtype=DTYPE) + 0.5) / points).repeat_interleave(turns).repeat(k)
        placement = ((torch.arange(turns, dtype=DTYPE) + 0.5) / turns).repeat(k * points)[:, None].expand(n, 3)
        lighting = psi.objects[obj].lighting.weights().detach().expand(n, -1)
        ones = torch.ones(n, dtype=DTYPE)
        images, labels = render(obj, RenderParams(factor.value_in_bin(bins, u), ones, ones, lighting,
                                                  placement=placement))
        m = (per_image_grads(theta, images, labels, render.config.l2) @ v).reshape(k, -1).mean(dim=1)
        p = factor.probs().detach()
        dl_dp = -(n_o / total) * m
        out[f"{obj}/azimuth"] = p * dl_dp - p * (p @ dl_dp)
    return out


@dataclass
class ToyProblem:
    """The pose-gap toy: ψ starts with one azimuth bin dominant; validation views come from another bin."""

    config: ToyConfig
    render: ToyRenderer
    val: tuple[Tensor, Tensor]  # images (M, 3, H, W), labels (M,)

    def psi(self, trainable: tuple[str, ...] = ("azimuth", "lighting"), dominant_bin: int = 5, p: float = 0.8) -> Psi:
        init = PsiInit(list(self.config.objects), lighting=list(self.config.lights), kind="dominant",
                       dominant={o: {"azimuth": dominant_bin} for o in self.config.objects}, p=p)
        return init_psi(init).set_trainable(trainable)

    def loss(self, params: dict[str, Tensor], images: Tensor, targets: Tensor) -> Tensor:
        return logistic_loss(params, images, targets, self.config.l2)

    def task(self, theta: Tensor, images: Tensor, targets: Tensor) -> AutogradTask:
        """The second-order terms at θ, by autograd from the functional loss (as for a real detector)."""
        return AutogradTask(self.loss, as_params(theta), (images, targets), self.val)

    def val_loss(self, theta: Tensor) -> float:
        return float(self.loss(as_params(theta), *self.val))


def toy_problem(config: ToyConfig | None = None, target_bin: int = 1, target_light: int = 1,
                val_per_object: int = 16) -> ToyProblem:
    """The toy with validation views of every object from `target_bin` (0-based) under `target_light`."""
    config = config or ToyConfig()
    render = ToyRenderer(config)
    psi = init_psi(PsiInit(list(config.objects), lighting=list(config.lights)))
    parts = [render(o, target_params(psi, o, target_bin, target_light, val_per_object)) for o in config.objects]
    return ToyProblem(config, render, (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])))
