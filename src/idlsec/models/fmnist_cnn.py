"""A small Fashion-MNIST CNN with a global-average-pooling head, so that CAM applies:
28x28 -> conv32 x2 -> pool -> conv64 x2 -> pool -> conv128 (7x7, the CAM layer) -> GAP -> linear."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


def _conv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class FashionCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv(1, w), _conv(w, w), nn.MaxPool2d(2),
            _conv(w, 2 * w), _conv(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv(2 * w, 4 * w),
        )
        self.linear = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.linear(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
