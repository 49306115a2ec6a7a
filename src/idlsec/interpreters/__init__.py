"""Differentiable interpreters: ``interp(x, target=None, *, create_graph=False) -> (N, 1, h, w)``."""

from __future__ import annotations

from ..errors import unknown_name
from .base import Interpreter, capture_output, eval_mode, minmax
from .cam import CAM

INTERPRETERS: dict[str, type[Interpreter]] = {"cam": CAM}


def register_interpreter(cls: type[Interpreter]) -> type[Interpreter]:
    INTERPRETERS[cls.name] = cls
    return cls


def get_interpreter(name: str, model, **kwargs) -> Interpreter:
    """Build a registered interpreter by name for ``model``."""
    if name not in INTERPRETERS:
        raise unknown_name("interpreter", name, INTERPRETERS)
    return INTERPRETERS[name](model, **kwargs)


__all__ = ["CAM", "INTERPRETERS", "Interpreter", "capture_output", "eval_mode", "get_interpreter",
           "minmax", "register_interpreter"]
