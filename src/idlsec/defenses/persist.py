"""Fitted detectors on disk: one safetensors file per detector, loaded without executing code.

    det = get_detector("ensemble", model).fit(x_benign, x_adv, fpr=0.005)
    det.save("gate.safetensors")
    det = load_detector("gate.safetensors", model)          # same scores, same threshold

The file holds the tensors ``Detector.state()`` returns and, in the safetensors header (JSON
strings), the format tag, the registry name and constructor arguments (``init_params()``), the
learned scalars, and the identity of the model it was fitted on: its card name and a SHA-256 over
its parameters and buffers (:func:`model_fingerprint`). A detector's class statistics and
threshold belong to one model, so ``load_detector`` refuses another model, and refuses a file whose
SHA-256 differs from the one the caller pins (``sha256=``), a truncated or foreign file, or a
detector name no longer registered, each with a one-line :class:`~idlsec.errors.ConfigError`
or :class:`~idlsec.errors.ChecksumError`.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from torch import nn

from ..data.resolve import file_digest
from ..errors import ChecksumError, ConfigError, InputError, unknown_name
from .detector_file import FORMAT, _model_name, model_fingerprint, write_detector  # noqa: F401


def read_header(path: str | Path, *, sha256: str | None = None) -> dict:
    """The header of a saved detector (format checked, JSON decoded); no model needed, so a spec
    can be validated before any work."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"detector file not found: {path}")
    if sha256 is not None:
        got = file_digest(path)
        if got != str(sha256).lower():
            raise ChecksumError(f"{path}: sha256 {got} does not match the expected {sha256}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        header = {k: json.loads(v) for k, v in meta.items()}
    except Exception as e:  # safetensors raises its own error types for a corrupt file
        raise ChecksumError(f"{path}: not a saved idlsec detector ({type(e).__name__}: {e})") from None
    if header.get("format") != FORMAT:
        raise ChecksumError(f"{path}: not a saved idlsec detector (format {header.get('format')!r}, "
                            f"expected {FORMAT!r})")
    from .registry import DETECTORS, detector_names

    if header.get("detector") not in DETECTORS:
        raise unknown_name("detector", header.get("detector"), detector_names())
    return header


def load_detector(path: str | Path, model: nn.Module, *, sha256: str | None = None):
    """The detector saved at ``path``, rebuilt on ``model`` with what it learned (its scores and
    threshold are those of the saved one). ``sha256``: the file's expected SHA-256, checked
    first. Refuses a model other than the one it was fitted on (card name and weights)."""
    header = read_header(path, sha256=sha256)
    name = _model_name(model)
    if header["model"] is not None and name is not None and header["model"] != name:
        raise ConfigError(f"{path}: this detector was fitted on {header['model']}, not {name}")
    if header["model_sha256"] != model_fingerprint(model):
        raise ConfigError(f"{path}: this detector was fitted on other weights of "
                          f"{header['model'] or 'its model'} (parameter SHA-256 "
                          f"{header['model_sha256'][:12]}...); refit it on this model")
    from .registry import get_detector

    det = get_detector(header["detector"], model, **header["params"])
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    try:
        det.load_state(tensors, header["scalars"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ChecksumError(f"{path}: its learned state does not fit a {header['detector']} detector "
                            f"({type(e).__name__}: {e})") from None
    return det
