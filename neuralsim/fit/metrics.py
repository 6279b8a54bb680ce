"""Image quality metrics for held-out views: PSNR and SSIM (Gaussian 11×11 window, σ = 1.5) on RGB in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(prediction: Tensor, target: Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images (…, 3) in [0, 1]."""
    mse = F.mse_loss(prediction.float(), target.float()).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def ssim(prediction: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """Mean structural similarity of two images (H, W, 3) in [0, 1] (window shrunk for tiny images)."""
    window = min(window, prediction.shape[0], prediction.shape[1])
    window -= 1 - window % 2  # odd
    x, y = (img.float().permute(2, 0, 1)[:, None] for img in (prediction, target))  # (3, 1, H, W)
    coords = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum()).to(x.device)
    kernel = (g[:, None] * g[None, :])[None, None]  # (1, 1, k, k)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, kernel)

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.mean().item()
