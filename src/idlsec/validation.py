"""Input checks shared by interpreters, attacks and metrics: done once per call, with messages
that name the problem instead of a traceback from deep inside torch."""

from __future__ import annotations

import torch

from .errors import InputError


def check_images(x, *, name: str = "x", channels: int | None = None) -> torch.Tensor:
    """Check an image batch: float tensor (N, C, H, W), finite, values in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a float tensor with values in [0, 1], got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise InputError(f"{name} is an empty batch")
    if channels is not None and x.shape[1] != channels:
        raise InputError(f"{name} must have {channels} channels, got {x.shape[1]}")
    if not torch.isfinite(x).all():
        raise InputError(f"{name} contains NaN or Inf")
    lo, hi = float(x.detach().min()), float(x.detach().max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(
            f"{name} must be in [0, 1] (normalisation belongs inside the model), got [{lo:.3g}, {hi:.3g}]"
        )
    return x


def check_labels(y, n: int, *, num_classes: int | None = None, name: str = "y") -> torch.Tensor:
    """Check a label vector: integer tensor (N,), values in [0, num_classes)."""
    if not isinstance(y, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of int64 labels, got {type(y).__name__}")
    if y.dim() != 1 or y.shape[0] != n:
        raise InputError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputError(f"{name} must be an integer (int64) tensor, got dtype {y.dtype}")
    if num_classes is not None and y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise InputError(f"{name} values must be in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
    return y.long()


def resolve_targets(target, n: int, device, *, num_classes: int | None = None,
                    default: torch.Tensor | None = None) -> torch.Tensor:
    """Turn None | int | Tensor[N] into a LongTensor[N] on ``device``; None uses ``default``."""
    if target is None:
        if default is None:
            raise InputError("target is None and no default was given")
        return default.to(device=device, dtype=torch.long)
    if isinstance(target, bool):
        raise InputError("target must be None, an int, or a LongTensor of shape (N,), not a bool")
    if isinstance(target, int):
        target = torch.full((n,), target, dtype=torch.long)
    target = check_labels(target, n, num_classes=num_classes, name="target")
    return target.to(device)


def check_positive(name: str, value, *, allow_zero: bool = False, upper: float | None = None):
    """Check one numeric hyperparameter; raises ConfigError naming it."""
    from .errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be finite, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    if upper is not None and value > upper:
        raise ConfigError(f"{name} must be <= {upper}, got {value}")
    return value


def check_int(name: str, value, *, minimum: int = 0):
    """Check one integer hyperparameter (bools refused); raises ConfigError naming it."""
    from .errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_bool(name: str, value):
    """Check a True/False option (1, 0 and strings refused); raises ConfigError naming it."""
    from .errors import ConfigError

    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value, choices):
    """Check a string option against its valid values; raises ConfigError listing them."""
    from .errors import ConfigError

    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_monitor(monitor):
    """A stateful query monitor: anything with ``observe(x, streams)`` and ``reset()`` (the
    oracle's ``monitor``, ``DetectorGate``'s inner one); raises ConfigError otherwise."""
    from .errors import ConfigError

    if not (callable(getattr(monitor, "observe", None)) and callable(getattr(monitor, "reset", None))):
        raise ConfigError(f"monitor must have observe(x, streams) and reset(), got {type(monitor).__name__}")
    return monitor


# --- paths and devices: checked before any work, creating nothing (the CLI's check(args)) -------
def check_output_path(path, *, what: str = "--out", kind: str = "dir"):
    """An output ``kind`` ("dir" or "file") that can be written: not "", not under a file, not an
    existing path of the other kind, its nearest existing folder writable (probed with a temporary
    file that is removed at once). Creates nothing; returns a Path. ConfigError otherwise."""
    import os
    import tempfile
    from pathlib import Path

    from .errors import ConfigError

    if path is None or not str(path).strip():
        raise ConfigError(f"{what} is empty: give a {'folder' if kind == 'dir' else 'file'} path")
    if "\x00" in str(path):
        raise ConfigError(f"{what} contains a NUL character")
    p = Path(path)
    try:
        if p.exists() and kind == "dir" and not p.is_dir():
            raise ConfigError(f"{what} {path}: exists and is not a folder")
        if p.is_dir() and kind == "file":
            raise ConfigError(f"{what} {path}: is a folder, expected a file")
        probe = p if p.is_dir() else p.parent
        probe = Path(os.path.abspath(probe))
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise ConfigError(f"{what} {path}: {probe} is a file, not a folder")
        fd, name = tempfile.mkstemp(dir=probe, prefix=".idlsec-probe-")
        os.close(fd)
        os.unlink(name)
    except ConfigError:
        raise
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot be written ({e.strerror or e})") from None
    return p


def check_input_path(path, *, what: str, kind: str = "file"):
    """An existing, readable file or folder; returns a Path. ConfigError otherwise."""
    import os
    from pathlib import Path

    from .errors import ConfigError

    if path is None or not str(path).strip() or "\x00" in str(path):
        raise ConfigError(f"{what} is empty or invalid: {path!r}")
    p = Path(path)
    if kind == "dir" and not p.is_dir():
        raise ConfigError(f"{what} {path}: no such folder")
    if kind == "file" and not p.is_file():
        raise ConfigError(f"{what} {path}: no such file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{what} {path}: not readable")
    return p


def check_device(device) -> str:
    """cpu | cuda | cuda:N | mps, and present here; returns it. ConfigError otherwise."""
    from .errors import ConfigError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"unknown device {device!r} (cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: no CUDA device is available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device {device!r}: no MPS device is available here (use --device cpu)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {device!r} (cpu, cuda, cuda:1, mps)")
    return str(device)


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so that
    a reader never sees a half-written file and a failure leaves the old one."""
    import os
    import tempfile
    from pathlib import Path

    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
