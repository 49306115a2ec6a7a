"""CAM: class activation mapping (Zhou et al., CVPR 2016).

``M_c = sum_k w^c_k A_k`` where A is the feature map that feeds global average pooling and w^c
the final linear layer's row for class c. Applies only to GAP+FC models. Native resolution (8x8
for the CIFAR ResNets, 7x7 for ResNet-50 at 224), no upsampling inside the loss, as in ADV^2.

Layers: ``target_layer=`` / ``fc_layer=`` (dotted names or modules), else the model card's
``cam_layer`` / ``fc_layer``, else found (:func:`~idlsec.interpreters.layers.find_cam_layers`).
Either way they are verified: ``logits = fc(GAP(features))``, or with a ReLU between (DenseNet;
``relu_features`` is then set unless given): found layers on the probe input that finds them
(the card's input size, ``input_size=``, else the first call's), declared ones on the first
call's own forward pass (no extra query to the model), or on a probe if ``input_size=`` is given. A model whose head is not GAP+linear (a
ViT, VGG) gets a ConfigError naming the reason and the override."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.normalize import get_layer
from ..precision import f32, full_precision
from .base import Interpreter, capture_output
from .layers import cam_layers, check_gap_head, input_size_of, layer_name


class CAM(Interpreter):
    name = "cam"
    second_order = False  # the map is a forward quantity: attacks need no double backward
    compilable = True

    def __init__(self, model: nn.Module, *, target_layer=None, fc_layer=None, relu_features=None,
                 input_size=None, **kwargs):
        super().__init__(model, **kwargs)
        self._wanted = (self._declared(target_layer, "cam_layer"), self._declared(fc_layer, "fc_layer"))
        self._sources = ("target_layer" if target_layer is not None else "cam_layer (model card)",
                         "fc_layer" if fc_layer is not None else "fc_layer (model card)")
        layer, fc = (get_layer(model, v) if isinstance(v, str) else v for v in self._wanted)
        if fc is not None and not isinstance(fc, nn.Linear):
            shown = repr(self._wanted[1]) if isinstance(self._wanted[1], str) else "module"
            raise ConfigError(f"CAM needs a GAP+linear head; {self._sources[1]}={shown} is a "
                              f"{type(fc).__name__}, not nn.Linear")
        self._relu = None if relu_features is None else bool(relu_features)
        self._card_relu = bool(getattr(getattr(model, "card", None), "cam_relu", False)) \
            and target_layer is None
        self.layer, self.fc, self.relu_features = layer, fc, self._relu
        self._verified = False
        if input_size is not None or (layer is None or fc is None):
            size = input_size_of(model, input_size)  # discovery needs a probe; so does input_size=
            if size is not None:
                self._setup(size)

    def _setup(self, size):
        found = cam_layers(self.model, size, target_layer=self._wanted[0], fc_layer=self._wanted[1],
                           sources=self._sources)
        self.layer, self.fc = get_layer(self.model, found.feature), get_layer(self.model, found.fc)
        self._set_relu(found.relu)
        self._verified = True

    def _set_relu(self, found: bool):
        self.relu_features = self._relu if self._relu is not None else (found or self._card_relu)

    def compute_with_logits(self, x, target, *, create_graph):
        if self.layer is None or self.fc is None:
            self._setup(tuple(x.shape[1:]))
        if self.compiling and self._verified and (split := self._split()) is not None:
            body, head = split  # the compiled path (idlsec.compiling): the features from the split
            feats = body(x)
            return self._map(head(feats), feats, target)
        with capture_output(self.layer) as store, ExitStack() as stack:
            if not self._verified:  # declared layers: verified on this call's own forward pass
                fc_in = stack.enter_context(capture_input(self.fc))
            logits = self.model(x)
        feats = store["out"]
        if feats.dim() != 4 or feats.shape[1] != self.fc.in_features:
            raise ConfigError(f"CAM cannot apply: {self._sources[0]}="
                              f"{layer_name(self.model, self.layer)!r} outputs {tuple(feats.shape)}, "
                              f"which does not feed a GAP+linear head with {self.fc.in_features} "
                              "inputs; pass the right target_layer= / fc_layer=")
        if not self._verified:
            source = f"{self._sources[0]}={layer_name(self.model, self.layer)!r}"
            self._set_relu(check_gap_head(feats.detach(), fc_in.get("in"), source,
                                          layer_name(self.model, self.fc)))
            self._verified = True
        return self._map(logits, feats, target)

    def _split(self):
        from ..compiling import compiled_split

        if getattr(self, "_split_layer", (None,))[0] is not self.layer:
            self._split_layer = (self.layer, layer_name(self.model, self.layer))
        return compiled_split(self.model, self._split_layer[1])

    def _map(self, logits, feats, target):
        with full_precision(feats.device):  # under amp: the features back to float32 first
            feats = f32(feats)
            if self.relu_features:
                feats = F.relu(feats)
            weights = self.fc.weight[target]  # (N, K)
            return logits, torch.einsum("nk,nkhw->nhw", weights, feats).unsqueeze(1)


@contextmanager
def capture_input(layer: nn.Module):
    """Record ``layer``'s first forward input in ``store["in"]``; the hook is always removed."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module, inputs):
        store["in"] = inputs[0].detach() if inputs and isinstance(inputs[0], torch.Tensor) else None

    handle = layer.register_forward_pre_hook(hook)
    try:
        yield store
    finally:
        handle.remove()
