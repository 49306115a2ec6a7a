"""CAM: class activation mapping (Zhou et al., CVPR 2016).

``M_c = sum_k w^c_k A_k`` where A is the feature map that feeds global average pooling and w^c
the final linear layer's row for class c. Applies only to GAP+FC models. Native resolution (8x8
for the CIFAR ResNets, 7x7 for ResNet-50 at 224), no upsampling inside the loss, as in ADV^2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Interpreter, capture_output


class CAM(Interpreter):
    name = "cam"

    def __init__(self, model: nn.Module, *, target_layer=None, fc_layer=None, relu_features=None,
                 **kwargs):
        super().__init__(model, **kwargs)
        self.layer = self._layer(target_layer, "cam_layer")
        self.fc = self._layer(fc_layer, "fc_layer")
        if not isinstance(self.fc, nn.Linear):
            raise ConfigError(f"CAM needs a GAP+linear head; the fc layer is {type(self.fc).__name__}")
        card = getattr(model, "card", None)
        self.relu_features = bool(card.cam_relu) if relu_features is None and card else bool(relu_features)

    def compute_with_logits(self, x, target, *, create_graph):
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
