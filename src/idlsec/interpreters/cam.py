"""CAM: class activation mapping (Zhou et al., CVPR 2016).

``M_c = sum_k w^c_k A_k`` where A is the feature map that feeds global average pooling and w^c
the final linear layer's row for class c. Applies only to GAP+FC models. Native resolution (8x8
for the CIFAR ResNets, 7x7 for ResNet-50 at 224), no upsampling inside the loss, as in ADV^2.

Layers: ``target_layer=`` / ``fc_layer=`` (dotted names or modules), else the model card's
``cam_layer`` / ``fc_layer``, else found (:func:`~idlsec.interpreters.layers.find_cam_layers`).
Either way they are verified on a probe input of the model's input size (the card's, or
``input_size=``, else the first call's): ``logits = fc(GAP(features))``, or with a ReLU between
(DenseNet; ``relu_features`` is then set unless given). A model whose head is not GAP+linear (a
ViT, VGG) gets a ConfigError naming the reason and the override."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.normalize import get_layer
from .base import Interpreter, capture_output
from .layers import cam_layers, input_size_of


class CAM(Interpreter):
    name = "cam"
    second_order = False  # the map is a forward quantity: attacks need no double backward

    def __init__(self, model: nn.Module, *, target_layer=None, fc_layer=None, relu_features=None,
                 input_size=None, **kwargs):
        super().__init__(model, **kwargs)
        self._wanted = (self._declared(target_layer, "cam_layer"), self._declared(fc_layer, "fc_layer"))
        self._sources = ("target_layer" if target_layer is not None else "cam_layer (model card)",
                         "fc_layer" if fc_layer is not None else "fc_layer (model card)")
        if isinstance(self._wanted[0], str):
            get_layer(model, self._wanted[0])  # an unknown name fails now, listing valid ones
        fc = self._wanted[1]
        module = get_layer(model, fc) if isinstance(fc, str) else fc
        if module is not None and not isinstance(module, nn.Linear):
            shown = repr(fc) if isinstance(fc, str) else "module"
            raise ConfigError(f"CAM needs a GAP+linear head; {self._sources[1]}={shown} is a "
                              f"{type(module).__name__}, not nn.Linear")
        card = getattr(model, "card", None)
        card_relu = bool(getattr(card, "cam_relu", False)) and target_layer is None
        self._relu = bool(relu_features) if relu_features is not None else None
        self._card_relu = card_relu
        self.layer = self.fc = self.relu_features = None  # set from the probe
        size = input_size_of(model, input_size)
        if size is not None:
            self._setup(size)

    def _setup(self, size):
        found = cam_layers(self.model, size, target_layer=self._wanted[0], fc_layer=self._wanted[1],
                           sources=self._sources)
        self.layer, self.fc = get_layer(self.model, found.feature), get_layer(self.model, found.fc)
        self.relu_features = self._relu if self._relu is not None else (found.relu or self._card_relu)

    def compute_with_logits(self, x, target, *, create_graph):
        if self.layer is None:
            self._setup(tuple(x.shape[1:]))
        with capture_output(self.layer) as store:
            logits = self.model(x)
        feats = store["out"]
        if feats.dim() != 4 or feats.shape[1] != self.fc.in_features:
            raise ConfigError(f"CAM cannot apply: layer output {tuple(feats.shape)} does not feed a "
                              f"GAP+linear head with {self.fc.in_features} inputs")
        if self.relu_features:
            feats = F.relu(feats)
        weights = self.fc.weight[target]  # (N, K)
        return logits, torch.einsum("nk,nkhw->nhw", weights, feats).unsqueeze(1)
