"""Flow-field metrics for spatially transformed examples (StAdv: Xiao, Zhu, Li, He, Liu, Song,
"Spatially Transformed Adversarial Examples", ICLR 2018). A flow is (N, 2, H, W) in pixels:
channel 0 the horizontal displacement, channel 1 the vertical one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError

FLOW_EPS = 1e-8


def _check(flow: torch.Tensor) -> None:
    if not isinstance(flow, torch.Tensor) or flow.dim() != 4 or flow.shape[1] != 2 or not flow.is_floating_point():
        raise InputError(f"a flow field must be a float (N, 2, H, W) tensor, got "
                         f"{tuple(flow.shape) if isinstance(flow, torch.Tensor) else type(flow).__name__}")


def flow_magnitude(flow: torch.Tensor) -> torch.Tensor:
    """Per-pixel displacement length ‖f(p)‖₂ in pixels: (N, 2, H, W) -> (N, H, W)."""
    _check(flow)
    return flow.pow(2).sum(1).sqrt()


def flow_smoothness(flow: torch.Tensor, eps: float = FLOW_EPS) -> torch.Tensor:
    """StAdv's flow loss per sample: Σ_p Σ_{q ∈ N(p)} sqrt(‖f(p) − f(q)‖²₂ + eps) over the 4-neighbours
    q of every pixel p, the field zero-padded outside the image (as the StAdv reference code);
    differentiable. A constant zero field gives 4·H·W·sqrt(eps); (N, 2, H, W) -> Tensor(N)."""
    _check(flow)
    padded = F.pad(flow, (1, 1, 1, 1))
    h, w = flow.shape[-2:]
    total = flow.new_zeros(flow.shape[0])
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        diff = flow - padded[:, :, dy:dy + h, dx:dx + w]
        total = total + (diff.pow(2).sum(1) + eps).sqrt().flatten(1).sum(1)
    return total
