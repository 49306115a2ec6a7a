"""Grad-CAM (Selvaraju et al., ICCV 2017), as in ADV^2's ``expr_attacks/gradcam_model.py``.

``alpha_k = mean_ij dz_y/dA_k(i, j)`` and ``L = ReLU(sum_k alpha_k A_k)`` where A is the output of
a convolutional layer (default: the model card's ``gradcam_layer``, e.g. ``net.layer3`` (8x8) for
the CIFAR ResNets, ``net.layer4`` (7x7) for ResNet-50; pass ``target_layer=`` a dotted name or a
module for any other layer) and ``z_y`` the logit of the explained class. Native resolution of A;
``upsample=True`` resizes to the input.

The map and the logits come from one forward pass (``compute_with_logits``). Without
``create_graph`` and with an input that needs no gradient, the backward pass starts at the layer
(nothing below it is differentiated). With ``create_graph=True`` the map is differentiable with
respect to x (second order through A; alpha's own dependence on x is piecewise constant for ReLU
networks).

``relu=False`` drops the final ReLU: at the layer that feeds a GAP+linear head this is exactly
CAM divided by h*w (alpha_k = w^y_k / (h w)), the identity the tests check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Interpreter


class GradCAM(Interpreter):
    name = "gradcam"

    def __init__(self, model: nn.Module, *, target_layer=None, relu: bool = True, **kwargs):
        super().__init__(model, **kwargs)
        self.layer = self._layer(target_layer, "gradcam_layer")
        self.relu = bool(relu)

    def compute_with_logits(self, x, target, *, create_graph):
        store: dict[str, torch.Tensor] = {}

        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ConfigError(f"Grad-CAM needs a convolutional layer with (N, C, h, w) output; got "
                                  f"{tuple(output.shape) if isinstance(output, torch.Tensor) else type(output)}")
            act = output if output.requires_grad else output.detach().requires_grad_()
            store["a"] = act
            return act.clone()  # downstream in-place ops (ReLU(inplace=True)) must not touch A

        with torch.enable_grad():
            handle = self.layer.register_forward_hook(hook)
            try:
                logits = self.model(x)
            finally:
                handle.remove()
            act = store["a"]
            score = logits.gather(1, target[:, None]).sum()
            (g,) = torch.autograd.grad(score, act, create_graph=create_graph)
        weights = g.mean((2, 3), keepdim=True)
        cam = (weights * act).sum(1, keepdim=True)
        return logits, (F.relu(cam) if self.relu else cam)
