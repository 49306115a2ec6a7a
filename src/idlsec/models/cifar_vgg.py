"""A small VGG-style CIFAR-10 network (Simonyan & Zisserman 2015, with batch norm) whose head is
global average pooling + one linear layer, so that CAM applies. It is the second architecture
family of the transfer experiments (the CIFAR ResNets are the first):

    32x32: conv32 conv32 pool | 16x16: conv64 conv64 pool | 8x8: conv128 conv128 conv128 (CAM layer)
    -> GAP -> linear(128, 10)

Every conv is 3x3, bias-free, followed by BatchNorm and ReLU. The CAM map is 8x8, as for the
ResNets; about 48M multiply-adds per image, close to ResNet-20 (41M)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

DEFAULT_CFG = (32, 32, "M", 64, 64, "M", 128, 128, 128)


class CifarVGG(nn.Module):
    def __init__(self, num_classes: int = 10, cfg=DEFAULT_CFG, in_channels: int = 3):
        super().__init__()
        layers, c = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.linear(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
