"""Differentiable interpreters: ``interp(x, target=None, *, create_graph=False) -> (N, 1, h, w)``.

Every interpreter is registered with ``@register_interpreter`` (:mod:`.registry`); an interpreter
that the IDLS attacks (ADV^2, AdvEdge) may target declares ``adv2_profile`` (see
:func:`idlsec.attacks._idls.profile_for`)."""

from __future__ import annotations

from .base import Interpreter, capture_output, eval_mode, minmax
from .cam import CAM
from .grad import Grad
from .gradcam import GradCAM
from .layers import find_cam_layers, find_gradcam_layer, second_order_context  # noqa: F401
from .mask import MASK, MaskState
from .registry import INTERPRETERS, get_interpreter, register_interpreter, unregister_interpreter
from .rts import RTS, SaliencyNet
from .smoothgrad import SmoothGrad

for _cls in (CAM, Grad, GradCAM, SmoothGrad, MASK, RTS):   # their modules stay registry-free
    register_interpreter(_cls)

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
    "unregister_interpreter",
]
