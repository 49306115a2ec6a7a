"""Grad-CAM (Selvaraju et al., ICCV 2017), as in ADV^2's ``expr_attacks/gradcam_model.py``.

``alpha_k = mean_ij dz_y/dA_k(i, j)`` and ``L = ReLU(sum_k alpha_k A_k)`` where A is the output of
a convolutional layer and ``z_y`` the logit of the explained class. Native resolution of A;
``upsample=True`` resizes to the input.

Layer: ``target_layer=`` (a dotted name or a module), else the model card's ``gradcam_layer``
(``net.layer3`` (8x8) for the CIFAR ResNets, ``net.layer4`` (7x7) for ResNet-50), else found on a
probe input (:func:`~idlsec.interpreters.layers.find_gradcam_layer`: the last spatial layer the
prediction depends on; the last block's first LayerNorm on a class-token ViT).

Transformers: ``reshape=`` turns the layer's output and its gradient into (N, C, h, w) before
the formula: ``"vit"`` (tokens (N, P + h*w, C), the P class/register/distillation tokens dropped),
``"swin"`` ((N, h, w, C)), or a callable ``f(act)`` (pytorch-grad-cam's ``reshape_transform``).
None (default): the card's ``reshape``, else what the output's shape calls for (tokens -> "vit",
a Swin model's maps -> "swin").

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

from ..models.normalize import get_layer
from ..precision import f32, full_precision
from .base import Interpreter
from .layers import (
    auto_reshape,
    check_reshape,
    find_gradcam_layer,
    input_size_of,
    layer_name,
    to_grid,
)


class GradCAM(Interpreter):
    name = "gradcam"
    compilable = True

    def __init__(self, model: nn.Module, *, target_layer=None, reshape=None, relu: bool = True,
                 input_size=None, **kwargs):
        super().__init__(model, **kwargs)
        self.relu = bool(relu)
        card_reshape = getattr(getattr(model, "card", None), "reshape", None)
        self.reshape = check_reshape(reshape if reshape is not None else card_reshape)
        layer = self._declared(target_layer, "gradcam_layer")
        self.layer = get_layer(model, layer) if isinstance(layer, str) else layer
        if self.layer is None and (size := input_size_of(model, input_size)) is not None:
            self._discover(size)

    def _discover(self, size):
        name, kind = find_gradcam_layer(self.model, size)
        self.layer = get_layer(self.model, name)
        if self.reshape is None:
            self.reshape = kind

    def compute_with_logits(self, x, target, *, create_graph):
        if self.layer is None:
            self._discover(tuple(x.shape[1:]))
        if self.compiling and (split := self._split()) is not None:
            return self._compiled(split, x, target, create_graph)
        store: dict[str, torch.Tensor] = {}

        def hook(_module, _inputs, output):
            kind = self.reshape if self.reshape is not None else auto_reshape(self.model, output, x.shape[-2:])
            if not callable(kind):
                to_grid(output, kind, x.shape[-2:])  # a view: checks the shape before any work
            act = output if output.requires_grad else output.detach().requires_grad_()
            store["a"], store["kind"] = act, kind
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
        return logits, self._map(act, g, store["kind"], x)

    def _split(self):
        from ..compiling import compiled_split

        if getattr(self, "_split_layer", (None,))[0] is not self.layer:
            self._split_layer = (self.layer, layer_name(self.model, self.layer))
        return compiled_split(self.model, self._split_layer[1])

    def _compiled(self, split, x, target, create_graph):
        """The compiled path (:mod:`idlsec.compiling`): A from the compiled body, its gradient
        through the eager head (the same formula as the hook's path)."""
        body, head = split
        with torch.enable_grad():
            act = body(x)
            kind = self.reshape if self.reshape is not None else auto_reshape(self.model, act, x.shape[-2:])
            if not callable(kind):
                to_grid(act, kind, x.shape[-2:])
            act = act if act.requires_grad else act.detach().requires_grad_()
            logits = head(act.clone())
            score = logits.gather(1, target[:, None]).sum()
            (g,) = torch.autograd.grad(score, act, create_graph=create_graph)
        return logits, self._map(act, g, kind, x)

    def _map(self, act, g, kind, x):
        with full_precision(x.device):  # under amp: A and its gradient back to float32 first
            act, g = (f32(to_grid(t, kind, x.shape[-2:])) for t in (act, g))
            weights = g.mean((2, 3), keepdim=True)
            cam = (weights * act).sum(1, keepdim=True)
            return F.relu(cam) if self.relu else cam
