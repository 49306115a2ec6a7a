"""Loading weights safely: SHA-256 first, then ``torch.load(weights_only=True)`` or safetensors,
so that no pickled code is ever executed."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import ChecksumError, ConfigError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (plain or ``{'state_dict': ...}``),
    with any DataParallel ``module.`` prefix removed."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except Exception as e:
            raise ChecksumError(f"{path}: not a valid safetensors file ({e})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ChecksumError(f"{path}: cannot be loaded as a weights-only checkpoint ({e})") from None
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            raise ChecksumError(f"{path}: does not contain a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint"):
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{source} does not fit the architecture: missing {list(missing)[:5]}, "
                          f"unexpected {list(unexpected)[:5]}")
    return module


def save_weights(module: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None):
    """Save as safetensors (contiguous CPU tensors; metadata values must be strings)."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
