"""Feature squeezing (Xu, Evans, Qi, NDSS 2018) as a detector with the ``Detector`` API.

score(x) = max over squeezers s of ‖softmax(f(x)) − softmax(f(s(x)))‖₁

Squeezers are written as strings: ``"bits:B"`` (reduce each channel to B bits),
``"median:K"`` (K×K median filter, reflect padding; K = 3, 5, 7 from ``defenses.transforms``,
K = 2 here: Xu et al.'s CIFAR-10 squeezer, the window anchored at the top-left pixel, padding
one row/column at the bottom/right, the lower of the two middle values), ``"nlm:S-P-H"``
(non-local means, Buades et al. CVPR 2005, in Xu et al.'s notation: search window S, patch P,
strength H in 0–255 units; ``nl_means``), and two random ones for randomised detectors:
``"noise:S"`` (uniform noise in ±S/255, clipped) and ``"a|b|…"`` (one of the alternatives per
image). Random squeezers draw from the ``generator`` passed at each call (seeded by the
detector). Defaults: 5-bit depth and a 3×3 median, the configuration of the issue's reference
point; ``XU_CIFAR_SQUEEZERS`` is Xu et al.'s CIFAR-10 joint detector (5-bit, 2×2 median,
NLM 13-3-2), the ``squeeze-nlm`` detector. ADV^2 evaluates its attack against this detector at
the 95th percentile of benign scores."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Detector
from .transforms import BitDepthReduction, MedianFilter

DEFAULT_SQUEEZERS = ("bits:5", "median:3")
XU_CIFAR_SQUEEZERS = ("bits:5", "median:2", "nlm:13-3-2")


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


def nl_means(x: torch.Tensor, search: int = 13, patch: int = 3, h: float = 2.0) -> torch.Tensor:
    """Non-local means (Buades, Coll & Morel, CVPR 2005), batched torch: every pixel becomes the
    average of the pixels in its ``search``×``search`` window weighted by
    exp(−d²/h²), d² the mean squared difference (0–255 units, over the channels) of the
    ``patch``×``patch`` patches around the two pixels; reflect padding. Differentiable.
    Deviation from OpenCV's ``fastNlMeansDenoisingColored`` (Xu et al.'s implementation): RGB
    rather than CIELAB, exact weights (no lookup table, no 2σ² offset)."""
    n, c, hh, ww = x.shape
    r, pr = search // 2, patch // 2
    xp = F.pad(x, (r, r, r, r), mode="reflect") if min(hh, ww) > r else F.pad(x, (r, r, r, r), mode="replicate")
    num = torch.zeros_like(x)
    den = torch.zeros(n, 1, hh, ww, dtype=x.dtype, device=x.device)
    scale = (255.0 / h) ** 2
    for dy in range(search):
        for dx in range(search):
            shifted = xp[:, :, dy:dy + hh, dx:dx + ww]
            d2 = ((x - shifted) ** 2).mean(1, keepdim=True)
            if pr:
                d2 = F.avg_pool2d(F.pad(d2, (pr, pr, pr, pr), mode="replicate"), patch, stride=1)
            w = torch.exp(-d2 * scale)
            num = num + w * shifted
            den = den + w
    return num / den


def _int(spec: str, arg: str) -> int:
    try:
        return int(arg)
    except ValueError:
        raise ConfigError(f"squeezer {spec!r}: {arg!r} is not an integer") from None


def _choice(alternatives: list) -> Callable:
    def fn(x, generator=None):
        k = torch.randint(len(alternatives), (x.shape[0],), generator=generator).to(x.device)
        out = torch.empty_like(x)
        for a, alt in enumerate(alternatives):
            mask = k == a
            if mask.any():
                out[mask] = alt(x[mask], generator=generator)
        return out
    fn.random = True
    return fn


def parse_squeezer(spec: str, *, straight_through: bool = False) -> Callable[..., torch.Tensor]:
    """``"bits:5"``, ``"median:3"``, ``"nlm:13-3-2"``, ``"noise:8"`` or ``"bits:4|median:2"`` ->
    a function ``fn(x, generator=None)`` on image batches (``fn.random``: it draws from the
    generator). ``straight_through``: bit depth passes gradients unchanged (BPDA)."""
    if isinstance(spec, str) and "|" in spec:
        alts = [parse_squeezer(s, straight_through=straight_through) for s in spec.split("|")]
        return _choice(alts)
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"squeezer must be 'bits:B', 'median:K', 'nlm:S-P-H', 'noise:S' or alternatives "
                          f"'a|b', got {spec!r}")
    kind, _, arg = spec.partition(":")
    if kind == "bits":
        value = _int(spec, arg)
        if not 1 <= value <= 8:
            raise ConfigError(f"squeezer {spec!r}: bits must be in 1..8")
        fn = lambda x, generator=None: bit_depth(x, value, straight_through=straight_through)  # noqa: E731
    elif kind == "median":
        value = _int(spec, arg)
        if value not in (2, 3, 5, 7):
            raise ConfigError(f"squeezer {spec!r}: median kernel must be 2, 3, 5 or 7")
        fn = lambda x, generator=None: median_smooth(x, value)  # noqa: E731
    elif kind == "nlm":
        parts = arg.split("-")
        if len(parts) != 3:
            raise ConfigError(f"squeezer {spec!r}: non-local means is 'nlm:SEARCH-PATCH-STRENGTH', e.g. nlm:13-3-2")
        search, patch, h = (_int(spec, v) for v in parts)
        if search < 1 or patch < 1 or search % 2 == 0 or patch % 2 == 0 or h <= 0:
            raise ConfigError(f"squeezer {spec!r}: search and patch must be odd and >= 1, strength > 0")
        fn = lambda x, generator=None: nl_means(x, search, patch, float(h))  # noqa: E731
    elif kind == "noise":
        value = _int(spec, arg)
        if not 1 <= value <= 255:
            raise ConfigError(f"squeezer {spec!r}: noise amplitude must be in 1..255 (/255)")

        def fn(x, generator=None):
            u = torch.rand(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
            return (x + (2 * u - 1) * (value / 255)).clamp(0, 1)
        fn.random = True
        return fn
    else:
        raise ConfigError(f"unknown squeezer kind {kind!r} in {spec!r}; valid: bits, median, nlm, noise")
    fn.random = False
    return fn


def softmax_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p - q).abs().sum(1)


class FeatureSqueezing(Detector):
    """Feature-squeezing detector; ``fit(x_benign)`` only calibrates the threshold. ``seed``: the
    generator of random squeezers (``noise:S``, ``a|b``) for queries; ``score_differentiable``
    (the adaptive attacker's, EOT over steps) draws from a second, independent generator."""

    name = "squeeze"

    def __init__(self, model: nn.Module, *, squeezers=DEFAULT_SQUEEZERS, batch_size: int = 256, seed: int = 0):
        super().__init__(model, batch_size=batch_size)
        if isinstance(squeezers, str):
            squeezers = [s for s in squeezers.split(",") if s]
        if not squeezers:
            raise ConfigError("feature squeezing needs at least one squeezer")
        self.squeezers = list(squeezers)
        self._fns = [parse_squeezer(s) for s in self.squeezers]
        self._fns_st = [parse_squeezer(s, straight_through=True) for s in self.squeezers]
        self.feature_names = [f"softmax_l1[{s}]" for s in self.squeezers]
        self.seed = int(seed)
        self.random = any(f.random for f in self._fns)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.attack_generator = torch.Generator().manual_seed(2**31 - 1 - self.seed)

    def squeeze_distances(self, x: torch.Tensor, *, differentiable: bool = False) -> torch.Tensor:
        """(N, S) L1 distances of the softmax to that of each squeezed input (no validation)."""
        fns = self._fns_st if differentiable else self._fns
        gen = self.attack_generator if differentiable else self.generator
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            xs = torch.cat([x] + [fn(x, generator=gen) for fn in fns])  # one batched forward
            probs = F.softmax(self.model(xs), dim=1).view(len(fns) + 1, x.shape[0], -1)
            return torch.stack([softmax_l1(probs[0], probs[i + 1]) for i in range(len(fns))], dim=1)

    def score_differentiable(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """The score with straight-through squeezers, for adaptive attacks (``target`` unused)."""
        return self.squeeze_distances(x, differentiable=True).max(1).values

    def _score_batch(self, x):
        d = self.squeeze_distances(x)
        return d.max(1).values, d

    def init_params(self) -> dict:
        return {**super().init_params(), "squeezers": self.squeezers, "seed": self.seed}

    def config(self) -> dict:
        return {**super().config(), "squeezers": self.squeezers, "seed": self.seed}
