"""Image edges as AdvEdge uses them, and where a perturbation puts its energy.

``sobel_edges`` reproduces ``skimage.filters.sobel`` (scikit-image >= 0.19) on the grey image
(RGB mean): kernels ``[1, 2, 1]/4 ⊗ [1, 0, -1]``, reflect padding (scipy's 'reflect', which for a
3-tap kernel is edge replication), magnitude ``sqrt((G_h² + G_v²) / 2)``. Values lie in [0, 1/√2]
for images in [0, 1]. Pure tensor functions: any device, differentiable, no NumPy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InputError

EDGE_THRESHOLD = 0.1           # AdvEdge+ for CAM, Grad, Grad-CAM and MASK
EDGE_THRESHOLD_RTS = 0.05      # AdvEdge+ for RTS


def default_edge_threshold(interpreter: str | None) -> float:
    """The AdvEdge+ threshold θ the released code uses for an interpreter name."""
    return EDGE_THRESHOLD_RTS if interpreter == "rts" else EDGE_THRESHOLD


def _kernels(device, dtype) -> torch.Tensor:
    smooth = torch.tensor([1.0, 2.0, 1.0], device=device, dtype=dtype) / 4
    edge = torch.tensor([1.0, 0.0, -1.0], device=device, dtype=dtype)
    # (2, 1, 3, 3): horizontal edges (derivative along rows), vertical edges (along columns)
    return torch.stack([torch.outer(edge, smooth), torch.outer(smooth, edge)]).unsqueeze(1)


def sobel_edges(x: torch.Tensor) -> torch.Tensor:
    """Sobel edge magnitude of the grey (channel-mean) image: (N, C, H, W) -> (N, 1, H, W)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise InputError(f"sobel_edges needs a float (N, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    grey = x.mean(1, keepdim=True)
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), _kernels(x.device, x.dtype))
    return torch.sqrt((g * g).sum(1, keepdim=True) / 2)


def edge_mask(edges: torch.Tensor, theta: float) -> torch.Tensor:
    """AdvEdge+'s hard mask ``1[E > θ]`` as a float tensor of the edges' shape."""
    return (edges > theta).to(edges.dtype)


def edge_energy_ratio(delta: torch.Tensor, edges: torch.Tensor, theta: float = EDGE_THRESHOLD) -> torch.Tensor:
    """Share of the perturbation's L2 energy (summed over channels) on pixels whose edge strength
    exceeds θ: Tensor(N) in [0, 1]; NaN for a zero perturbation.

    ``delta``: (N, C, H, W); ``edges``: (N, 1, H, W), e.g. ``sobel_edges(x)`` of the benign image."""
    if delta.dim() != 4 or edges.dim() != 4 or edges.shape[1] != 1 \
            or delta.shape[0] != edges.shape[0] or delta.shape[-2:] != edges.shape[-2:]:
        raise InputError(f"edge_energy_ratio needs delta (N, C, H, W) and edges (N, 1, H, W) of the same "
                         f"N, H, W; got {tuple(delta.shape)} and {tuple(edges.shape)}")
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not math.isfinite(theta):
        raise InputError(f"theta must be a finite number, got {theta!r}")
    energy = delta.detach().float().pow(2).sum(1, keepdim=True)
    on_edges = (energy * (edges.detach() > theta)).flatten(1).sum(1)
    total = energy.flatten(1).sum(1)
    return torch.where(total > 0, on_edges / total.clamp_min(1e-30), torch.full_like(total, math.nan))
