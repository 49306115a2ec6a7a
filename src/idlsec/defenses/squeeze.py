"""Feature squeezing (Xu, Evans, Qi, NDSS 2018) as a detector with the ``Detector`` API.

score(x) = max over squeezers s of ‖softmax(f(x)) − softmax(f(s(x)))‖₁

Squeezers are written as strings: ``"bits:B"`` (reduce each channel to B bits) and
``"median:K"`` (K×K median filter, reflect padding; K = 3, 5, 7 from ``defenses.transforms``,
K = 2 here: Xu et al.'s CIFAR-10 squeezer, the window anchored at the top-left pixel, padding
one row/column at the bottom/right, the lower of the two middle values). Defaults: 5-bit depth
and a 3×3 median, the configuration of the issue's reference point.
ADV^2 evaluates its attack against this detector at the 95th percentile of benign scores."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Detector
from .transforms import BitDepthReduction, MedianFilter

DEFAULT_SQUEEZERS = ("bits:5", "median:3")


def straight_through(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """BPDA (Athalye et al., ICML 2018): forward ``fn(x)``, backward the identity."""
    return lambda x: x + (fn(x) - x).detach()


def bit_depth(x: torch.Tensor, bits: int, *, straight_through: bool = False) -> torch.Tensor:
    """Quantise [0, 1] images to ``bits`` bits per channel (``transforms.BitDepthReduction``);
    ``straight_through`` passes gradients unchanged (for adaptive attacks)."""
    q = BitDepthReduction(bits=bits).transform(x)
    return x + (q - x).detach() if straight_through else q


def median_smooth(x: torch.Tensor, k: int) -> torch.Tensor:
    """K×K median filter, reflect padding (``transforms.MedianFilter``; K = 2 as described
    above); differentiable a.e."""
    if k != 2:
        return MedianFilter(kernel=k).transform(x)
    n, c, h, w = x.shape
    patches = F.unfold(F.pad(x, (0, 1, 0, 1), mode="reflect"), 2).view(n, c, 4, h * w)
    return patches.median(dim=2).values.view(n, c, h, w)


def parse_squeezer(spec: str, *, straight_through: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """``"bits:5"`` or ``"median:3"`` -> a function on image batches."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"squeezer must be 'bits:B' or 'median:K', got {spec!r}")
    kind, _, arg = spec.partition(":")
    try:
        value = int(arg)
    except ValueError:
        raise ConfigError(f"squeezer {spec!r}: {arg!r} is not an integer") from None
    if kind == "bits":
        if not 1 <= value <= 8:
            raise ConfigError(f"squeezer {spec!r}: bits must be in 1..8")
        return lambda x: bit_depth(x, value, straight_through=straight_through)
    if kind == "median":
        if value not in (2, 3, 5, 7):
            raise ConfigError(f"squeezer {spec!r}: median kernel must be 2, 3, 5 or 7")
        return lambda x: median_smooth(x, value)
    raise ConfigError(f"unknown squeezer kind {kind!r} in {spec!r}; valid: bits, median")


def softmax_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p - q).abs().sum(1)


class FeatureSqueezing(Detector):
    """Feature-squeezing detector; ``fit(x_benign)`` only calibrates the threshold."""

    name = "squeeze"

    def __init__(self, model: nn.Module, *, squeezers=DEFAULT_SQUEEZERS, batch_size: int = 256):
        super().__init__(model, batch_size=batch_size)
        if isinstance(squeezers, str):
            squeezers = [s for s in squeezers.split(",") if s]
        if not squeezers:
            raise ConfigError("feature squeezing needs at least one squeezer")
        self.squeezers = list(squeezers)
        self._fns = [parse_squeezer(s) for s in self.squeezers]
        self._fns_st = [parse_squeezer(s, straight_through=True) for s in self.squeezers]
        self.feature_names = [f"softmax_l1[{s}]" for s in self.squeezers]

    def squeeze_distances(self, x: torch.Tensor, *, differentiable: bool = False) -> torch.Tensor:
        """(N, S) L1 distances of the softmax to that of each squeezed input (no validation)."""
        fns = self._fns_st if differentiable else self._fns
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            xs = torch.cat([x] + [fn(x) for fn in fns])  # one batched forward
            probs = F.softmax(self.model(xs), dim=1).view(len(fns) + 1, x.shape[0], -1)
            return torch.stack([softmax_l1(probs[0], probs[i + 1]) for i in range(len(fns))], dim=1)

    def score_differentiable(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """The score with straight-through squeezers, for adaptive attacks (``target`` unused)."""
        return self.squeeze_distances(x, differentiable=True).max(1).values

    def _score_batch(self, x):
        d = self.squeeze_distances(x)
        return d.max(1).values, d

    def config(self) -> dict:
        return {**super().config(), "squeezers": self.squeezers}
