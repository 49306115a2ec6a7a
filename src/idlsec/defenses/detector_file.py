"""Writing a fitted detector to one safetensors file (the format :mod:`idlsec.defenses.persist`
reads back): a leaf module, so that ``Detector.save`` needs no registry import."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import ConfigError, InputError

FORMAT = "idlsec-detector/1"


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the model's parameters and buffers in
    ``state_dict`` order: the same weights give the same hex digest on any device."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _model_name(model: nn.Module) -> str | None:
    card = getattr(model, "card", None)
    return getattr(card, "name", None)


def write_detector(det, path: str | Path) -> Path:
    """Write ``det`` (fitted) to ``path`` (``.safetensors``) atomically; see the module docstring."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(f"a detector is saved as .safetensors, got {path.name!r}")
    if det.threshold is None:
        raise ConfigError(f"{det.name} is not fitted: call fit() before save()")
    tensors, scalars = det.state()
    header = {"format": FORMAT, "detector": det.name, "params": det.init_params(), "scalars": scalars,
              "model": _model_name(det.model), "model_sha256": model_fingerprint(det.model)}
    try:
        meta = {k: json.dumps(v) for k, v in header.items()}
    except TypeError as e:
        raise ConfigError(f"{det.name} cannot be saved: its parameters are not plain values ({e}); "
                          "build it from names (interpreters, squeezers) rather than objects") from None
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: {path.parent} is not a directory")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file's mode, not mkstemp's 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
