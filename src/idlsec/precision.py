"""Mixed precision for the forward passes of attacks and interpreters (``amp=``; issue 19 §2).

``amp=None`` (default): float32 throughout. ``amp="bf16"`` / ``"fp16"``: the model's forward pass
runs under :func:`torch.autocast` on the input's device with that dtype; the logits and maps it
yields are cast back to float32 before any loss, normalisation or distance is computed, so the
losses, maps and gradients to the input are accumulated in float32 (the input stays float32).
Whether the maps stay within tolerance is measured, not assumed: ``benchmarks/amp_tolerance.py``
(CPU: bf16; fp16 needs CUDA, ``benchmarks/gpu/speed.sh``). No loss scaling: the attacks take
sign steps (scale-free) and the maps are min-max normalised, but an fp16 gradient that underflows
to zero stays zero; the measurement shows where that happens.

The autocast weight cache is off (``cache_enabled=False``): each step enters and leaves autocast,
so it would not carry over anyway, and a cached cast cannot be captured in a CUDA graph."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .errors import ConfigError

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(value) -> str | None:
    if value is not None and value not in AMP_DTYPES:
        raise ConfigError(f"amp must be one of None, 'bf16', 'fp16', got {value!r}")
    return value


def autocast(device: torch.device | str, amp: str | None):
    """The autocast context of ``amp`` on ``device`` (a no-op context when ``amp`` is None)."""
    if amp is None:
        return nullcontext()
    kind = device.type if isinstance(device, torch.device) else str(device).split(":")[0]
    return torch.autocast(kind, dtype=AMP_DTYPES[amp], cache_enabled=False)


def f32(t):
    """``t`` cast back to float32 when autocast made it bf16/fp16 (else itself; None stays None)."""
    return t.float() if t is not None and t.dtype in (torch.bfloat16, torch.float16) else t


def full_precision(device: torch.device):
    """Autocast switched off within (the interpreters' map arithmetic, on float32 operands)."""
    return torch.autocast(device.type, enabled=False)
