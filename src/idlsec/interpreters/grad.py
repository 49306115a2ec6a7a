"""Grad: vanilla gradient saliency (Simonyan, Vedaldi & Zisserman, ICLR-W 2014), in two forms.

- ``form="paper"``: ``M(i, j) = max_c |dS_y / dx_{c,i,j}|`` with ``S_y`` the logit of class y
  (what ``captum.attr.Saliency(abs=True)`` gives, reduced by a channel max).
- ``form="adv2"`` (default, ADV^2's ``rev2/gs/generate_gs.py``): the gradient of the cross-entropy
  ``-log softmax(f(x))_y`` instead of the logit, then ``abs``, channel max and an average pooling.
  Deviation (numerics only): the cross-entropy is :func:`exact_cross_entropy` (defined in
  ``idlsec.metrics.losses``, re-exported here), whose gradient is
  exact in float32 for confident predictions; with ``F.cross_entropy`` the term ``p_y - 1`` rounds
  to 0 once ``p_y`` rounds to 1 and the map becomes rounding noise (docs/interpreters.md).

``pool``: average-pooling factor of the map. ``"auto"`` (default) is 4 for inputs of side >= 112
(ADV^2's 56x56 map at 224) and 1 for small inputs (the CIFAR-10/Fashion-MNIST default: the map
stays at 32x32/28x28, one value per pixel, since a 4x pool would leave an 8x8 map).

Gradients are taken with respect to the [0, 1] image (normalisation is inside the model).

Second order. A ReLU network's gradient map is piecewise constant in x, so its own gradient is
zero almost everywhere. With ``create_graph=True`` the forward pass runs under
:func:`idlsec.models.smooth_relu` (ADV^2's h(z), ``tau=1e-4`` by default; ``surrogate="softplus"``
uses sigmoid(beta z) with ``surrogate_param`` = beta). The forward values, hence the logits and
predictions, are exactly those of the true model and the model is never mutated; only the backward
pass is smoothed. ``surrogate=None`` keeps the exact (second-order-zero) ReLU derivative.

Use inside an attack loss (the API the white-box attacks rely on)::

    grad = Grad(model)                                   # form="adv2", pool="auto"
    logits, maps = grad.logits_and_maps(x_adv, target)   # create_graph=True by default
    loss = exact_cross_entropy(logits, target) + c * ((maps - benign_maps) ** 2).sum()
    loss.backward()                                      # or torch.autograd.grad(loss, x_adv)

``logits`` come from the same forward pass as the map (exact values; their gradient passes the
smooth surrogate, which differs from the true ReLU derivative only for |z| < ~0.01).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from ..compiling import compiled_model
from ..metrics.losses import exact_cross_entropy
from ..models.smooth_relu import smooth_relu
from ..precision import f32
from ..validation import check_choice, check_int
from .base import Interpreter

__all__ = ["Grad", "exact_cross_entropy"]   # exact_cross_entropy: re-exported from metrics.losses


class Grad(Interpreter):
    name = "grad"
    compilable = True

    def __init__(self, model: nn.Module, *, form: str = "adv2", pool="auto", surrogate: str | None = "tau",
                 surrogate_param: float | None = None, **kwargs):
        super().__init__(model, **kwargs)
        self.form = check_choice("form", form, ("adv2", "paper"))
        if pool != "auto":
            check_int("pool", pool, minimum=1)
        self.pool = pool
        if surrogate is not None:
            check_choice("surrogate", surrogate, ("tau", "softplus"))
        self.surrogate = surrogate
        self.surrogate_param = surrogate_param

    def pool_for(self, x: torch.Tensor) -> int:
        """The pooling factor used for an input of x's size."""
        if self.pool == "auto":
            return 4 if min(x.shape[-2:]) >= 112 else 1
        return self.pool

    def compute_with_logits(self, x, target, *, create_graph):
        xg = x if x.requires_grad else x.detach().requires_grad_()
        smooth = create_graph and self.surrogate is not None
        # compiled path (idlsec.compiling): first order only; a double backward stays eager
        model = compiled_model(self.model) if self.compiling and not create_graph else self.model
        with torch.enable_grad(), (smooth_relu(self.surrogate, self.surrogate_param) if smooth else nullcontext()):
            logits = f32(model(xg))  # under amp: the score in float32
            if self.form == "adv2":
                score = exact_cross_entropy(logits, target)
            else:
                score = logits.gather(1, target[:, None]).sum()
            (g,) = torch.autograd.grad(score, xg, create_graph=create_graph)
        maps = g.abs().amax(1, keepdim=True)
        pool = self.pool_for(x)
        if pool > 1:
            maps = F.avg_pool2d(maps, pool)
        return logits, maps
