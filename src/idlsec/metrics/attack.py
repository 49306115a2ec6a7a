"""Prediction-side and perturbation metrics, per sample."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError


def attack_success(pred: torch.Tensor, labels: torch.Tensor, *, targeted: bool) -> torch.Tensor:
    """Targeted: pred == target. Untargeted: pred != true label. Bool Tensor(N)."""
    if pred.shape != labels.shape:
        raise InputError(f"pred and labels differ in shape: {tuple(pred.shape)} vs {tuple(labels.shape)}")
    return pred == labels if targeted else pred != labels


def class_confidence(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Softmax probability of ``cls`` per sample: Tensor(N)."""
    return F.softmax(logits.detach().float(), dim=1).gather(1, cls.view(-1, 1)).squeeze(1)


def linf(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x_adv - x).detach().flatten(1).abs().amax(1)


def l2(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x_adv - x).detach().flatten(1).norm(dim=1)


def _gaussian_window(size: int, sigma: float, channels: int, device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).unsqueeze(0)
    return (g.t() @ g).expand(channels, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of two [0, 1] image batches, per sample.
    Gaussian window (7, sigma 1.5: small enough for 28-32 px images), mean over channels."""
    if a.shape != b.shape or a.dim() != 4:
        raise InputError(f"ssim needs two (N, C, H, W) batches of equal shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    a, b = a.detach().float(), b.detach().float()
    c = a.shape[1]
    w = _gaussian_window(min(window, a.shape[-1], a.shape[-2]), sigma, c, a.device)
    conv = lambda t: F.conv2d(t, w, groups=c)  # noqa: E731
    mu_a, mu_b = conv(a), conv(b)
    var_a = conv(a * a) - mu_a ** 2
    var_b = conv(b * b) - mu_b ** 2
    cov = conv(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def query_stats(queries, success, budgets=(100, 1_000, 10_000)) -> dict:
    """Mean/median queries over successful attacks, and ASR within each budget."""
    q = torch.as_tensor(queries, dtype=torch.float64)
    s = torch.as_tensor(success, dtype=torch.bool)
    ok = q[s]
    out = {
        "queries_mean": float(ok.mean()) if len(ok) else math.nan,
        "queries_median": float(ok.quantile(0.5)) if len(ok) else math.nan,
    }
    out["asr_at_budget"] = {str(b): float((s & (q <= b)).float().mean()) for b in budgets}
    return out
