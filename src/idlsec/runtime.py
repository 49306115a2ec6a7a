"""The machine an experiment runs on: the default device, its description, thread count and the
clock barrier for timings. Each exists once; the CLI, the harness and the scripts call these."""

from __future__ import annotations

import os
import platform
import socket
from contextlib import contextmanager

import torch


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads(n: int | None) -> None:
    """``--threads N``: torch's intra-op thread count (None: leave it)."""
    if n is not None:
        from .errors import ConfigError

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"threads must be an integer >= 1, got {n!r}")
        torch.set_num_threads(n)


def sync(device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so that wall-clock timings are honest."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def cpu_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    return cpu


def machine_info(device: str | None = None) -> dict:
    """Host, CPU, core and thread counts, torch and Python versions, the GPU when there is one,
    and the device used (recorded with every run)."""
    info = {
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    if device:
        info["device"] = device
    return info


@contextmanager
def flush_denormal():
    """Denormal floats flushed to zero on the CPU inside the block (an attack's loop). The exact
    cross-entropy's gradient on a confidently classified image is denormal-sized, and CPU
    arithmetic on denormals is slow: measured on the README's demo (AdvEdge, CAM, 8 images,
    2-core CPU) 37.6 s without this, 26.0 s with it, the same IoU. torch has no getter for the
    flag, so on exit it is set back to off, torch's default."""
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)
