"""Normalisation lives inside the model: attacks and epsilons stay in [0, 1] pixel units."""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class NormalizedModel(nn.Module):
    """``net(normalize(x))``; ``card`` (a ModelCard) tells interpreters which layers to use."""

    def __init__(self, net: nn.Module, mean, std, card=None):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.card = card

    def forward(self, x):
        return self.net(self.normalize(x))


def with_normalization(model: nn.Module, mean, std) -> NormalizedModel:
    return NormalizedModel(model, mean, std)


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """A sub-module by dotted name (``"net.layer3"``), with an error that lists nearby names."""
    from ..errors import ConfigError

    modules = dict(model.named_modules())
    if name not in modules:
        tops = [n for n in modules if n and n.count(".") <= 1][:20]
        raise ConfigError(f"model has no layer {name!r}; some valid names: {', '.join(tops)}")
    return modules[name]
