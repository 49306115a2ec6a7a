"""The smooth ReLU-derivative surrogate of ADV^2 (Zhang et al. 2020, §2.2 of ALGORITHMS.md).

A ReLU network's gradient map is piecewise constant in x, so its second derivative is zero almost
everywhere. Inside ``smooth_relu()`` every ReLU keeps its exact forward value (predictions are
those of the true model) but back-propagates the smooth h(z):

    h(z) = z / sqrt(z^2 + tau)          for z >= 0
    h(z) = 1 + z / sqrt(z^2 + tau)      for z <  0            (tau = 1e-4)

or, as an option, the derivative of softplus with slope ``beta``. The user's model is never
mutated: calls to ``F.relu``/``torch.relu``/``nn.ReLU`` are intercepted with a TorchFunctionMode.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


def _tau_derivative(z, tau):
    s = z / torch.sqrt(z * z + tau)
    return torch.where(z < 0, 1 + s, s)


def _softplus_derivative(z, beta):
    return torch.sigmoid(beta * z)


class _SurrogateReLU(torch.autograd.Function):
    """Forward: the exact ReLU. Backward: ``derivative(z, param)``, built from differentiable ops,
    so that a backward pass with ``create_graph=True`` can itself be differentiated."""

    @staticmethod
    def forward(ctx, z, derivative, param):
        ctx.save_for_backward(z)
        ctx.derivative, ctx.param = derivative, param
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * ctx.derivative(z, ctx.param), None, None


_RELUS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu_}


class _SmoothReLUMode(TorchFunctionMode):
    def __init__(self, kind: str, param: float):
        super().__init__()
        self.kind, self.param = kind, param

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            z = args[0] if args else kwargs["input"]
            derivative = _tau_derivative if self.kind == "tau" else _softplus_derivative
            return _SurrogateReLU.apply(z, derivative, self.param)
        return func(*args, **(kwargs or {}))


@contextmanager
def smooth_relu(kind: str = "tau", param: float | None = None):
    """Within this context, ReLUs back-propagate a smooth derivative (forward unchanged).

    ``kind="tau"`` uses ADV^2's h(z) with ``param`` = tau (default 1e-4); ``kind="softplus"``
    uses sigmoid(beta*z) with ``param`` = beta (default 10)."""
    from ..errors import ConfigError

    if kind not in ("tau", "softplus"):
        raise ConfigError(f"unknown smooth ReLU kind {kind!r}; valid: softplus, tau")
    param = (1e-4 if kind == "tau" else 10.0) if param is None else float(param)
    with _SmoothReLUMode(kind, param):
        yield
