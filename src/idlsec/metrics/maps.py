"""Similarity between attribution maps, per sample, torch-native. Maps are (N, 1, h, w) or (N, h, w);
they are min-max normalised per sample before every distance, as in ADV^2's L_p measure."""

from __future__ import annotations

import torch

from ..errors import InputError

DEFAULT_K_GRID = tuple(round(0.05 * i, 2) for i in range(1, 11))  # 5%, 10%, ..., 50%


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape:
        raise InputError(f"maps must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 2:
        raise InputError(f"maps must be batched (N, ...), got shape {tuple(a.shape)}")
    return a.detach().flatten(1).float(), b.detach().flatten(1).float()


def _minmax(flat: torch.Tensor) -> torch.Tensor:
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    return (flat - lo) / (hi - lo).clamp_min(1e-12)


def topk_mask(flat: torch.Tensor, k: float) -> torch.Tensor:
    """Boolean mask of the top ceil(k * pixels) entries of each row (ties: lower index first)."""
    if not 0 < k <= 1:
        raise InputError(f"k must be a fraction in (0, 1], got {k}")
    n = max(1, int(round(k * flat.shape[1])))
    # a stable sort makes ties deterministic on every device
    idx = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :n]
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)


def topk_iou(a: torch.Tensor, b: torch.Tensor, k: float = 0.25) -> torch.Tensor:
    """IoU of the top-k% most salient pixels of two maps: Tensor(N)."""
    fa, fb = _pair(a, b)
    ma, mb = topk_mask(fa, k), topk_mask(fb, k)
    return (ma & mb).sum(1).float() / (ma | mb).sum(1).float()


def topk_iou_curve(a: torch.Tensor, b: torch.Tensor, ks=DEFAULT_K_GRID) -> torch.Tensor:
    """IoU at every k of the grid: Tensor(N, len(ks)); its mean over k is the papers' IoU test."""
    return torch.stack([topk_iou(a, b, k) for k in ks], dim=1)


def map_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance between the flattened min-max-normalised maps: Tensor(N)."""
    fa, fb = _pair(a, b)
    return (_minmax(fa) - _minmax(fb)).abs().sum(1)


def map_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L2 distance between the flattened min-max-normalised maps: Tensor(N)."""
    fa, fb = _pair(a, b)
    return (_minmax(fa) - _minmax(fb)).norm(dim=1)


def _ranks(flat: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank), per row."""
    sorted_vals, order = torch.sort(flat, dim=1, stable=True)
    n = flat.shape[1]
    pos = torch.arange(n, dtype=torch.float32, device=flat.device).expand_as(flat)
    # tie groups: mean position within each run of equal values
    new_group = torch.ones_like(sorted_vals, dtype=torch.bool)
    new_group[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    group = new_group.long().cumsum(1) - 1
    sums = torch.zeros_like(pos).scatter_add_(1, group, pos)
    counts = torch.zeros_like(pos).scatter_add_(1, group, torch.ones_like(pos))
    mean_rank = (sums / counts.clamp_min(1)).gather(1, group)
    return torch.empty_like(pos).scatter_(1, order, mean_rank)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of two maps, per sample: Tensor(N) in [-1, 1]."""
    fa, fb = _pair(a, b)
    ra, rb = _ranks(fa), _ranks(fb)
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    denom = (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)
    return (ra * rb).sum(1) / denom
