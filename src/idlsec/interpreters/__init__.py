"""Differentiable interpreters: ``interp(x, target=None, *, create_graph=False) -> (N, 1, h, w)``."""

from __future__ import annotations

from ..errors import unknown_name
from .base import Interpreter, capture_output, eval_mode, minmax
from .cam import CAM
from .grad import Grad
from .gradcam import GradCAM
from .mask import MASK, MaskState
from .rts import RTS, SaliencyNet
from .smoothgrad import SmoothGrad

INTERPRETERS: dict[str, type[Interpreter]] = {"cam": CAM, "grad": Grad, "gradcam": GradCAM,
                                              "smoothgrad": SmoothGrad, "mask": MASK, "rts": RTS}


def register_interpreter(cls: type[Interpreter]) -> type[Interpreter]:
    INTERPRETERS[cls.name] = cls
    return cls


def get_interpreter(name: str, model, **kwargs) -> Interpreter:
    """Build a registered interpreter by name for ``model``."""
    if name not in INTERPRETERS:
        raise unknown_name("interpreter", name, INTERPRETERS)
    return INTERPRETERS[name](model, **kwargs)


__all__ = [
    "CAM",
    "INTERPRETERS",
    "MASK",
    "RTS",
    "SaliencyNet",
    "Grad",
    "GradCAM",
    "Interpreter",
    "MaskState",
    "SmoothGrad",
    "capture_output",
    "eval_mode",
    "get_interpreter",
    "minmax",
    "register_interpreter",
]
