"""Separable Gaussian blur on (N, C, H, W) tensors (reflect padding, as OpenCV's default border),
differentiable, on the input's device. Shared by MASK, RTS and its training."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def opencv_sigma(ksize: int) -> float:
    """The sigma OpenCV's GaussianBlur uses for ``sigma=0`` and kernel size ``ksize``."""
    return 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8


def gaussian_kernel(sigma: float, ksize: int | None = None, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """A normalised 1-D Gaussian of odd length ``ksize`` (default 2*ceil(3 sigma) + 1)."""
    if ksize is None:
        ksize = 2 * math.ceil(3 * sigma) + 1
    r = (ksize - 1) / 2
    k = torch.arange(ksize, device=device, dtype=dtype) - r
    g = torch.exp(-(k * k) / (2 * sigma * sigma))
    return g / g.sum()


def gaussian_blur(x: torch.Tensor, sigma: float, ksize: int | None = None) -> torch.Tensor:
    """Blur each channel of ``x`` with a separable Gaussian; the kernel is clipped to the image."""
    if sigma <= 0:
        return x
    g = gaussian_kernel(sigma, ksize, device=x.device, dtype=x.dtype)
    r = (g.numel() - 1) // 2
    h, w = x.shape[-2:]
    r = min(r, h - 1, w - 1)
    if r < (g.numel() - 1) // 2:  # reflect padding needs r < size: shorten the kernel
        g = g[(g.numel() - 1) // 2 - r:(g.numel() - 1) // 2 + r + 1]
        g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
