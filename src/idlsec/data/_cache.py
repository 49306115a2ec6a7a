"""Decoded-array cache: a dataset is decoded once per machine and stored as safetensors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .resolve import cache_dir


def cached_arrays(key: str, decode: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Return ``decode()``'s tensors, from ``<cache>/decoded/<key>.safetensors`` when present."""
    path = cache_dir() / "decoded" / f"{key}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))
        except Exception:  # a truncated cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    arrays = decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in arrays.items()}, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return arrays
