"""Local intrinsic dimensionality (LID) detector: Ma et al., "Characterizing Adversarial Subspaces
Using Local Intrinsic Dimensionality", ICLR 2018; one of the detectors ADV^2 (Zhang et al.,
USENIX Security 2020) evaluates its evasion against.

Per layer L (default every residual block of the card's CAM stage, ``detector.default_layers``,
plus the logits) the flattened activations a_L(x) and their Euclidean distances r_1 ≤ … ≤ r_k to
the k nearest of a *reference* batch of benign activations give the maximum-likelihood estimate

    LID_L(x) = −( (1/k) Σ_i log(r_i / r_k) )^(−1)      (k = 20, Ma et al.'s CIFAR-10 setting)

and a logistic regression on the standardised per-layer LIDs (``detector._logistic_regression``,
class-balanced) gives the score. ``fit(x_benign, x_adv, fpr, x_calib)``: the reference batch is
every other benign image (at most ``n_reference`` = 100, Ma et al.'s minibatch), the regression is
trained on the remaining benign images against ``x_adv``, the threshold is set on ``x_calib``.
Deviations: one fixed reference batch instead of the query's own minibatch (a deployed detector
scores one image at a time); no noisy negatives; the residual blocks' outputs instead of every
layer. ``score_differentiable`` keeps the graph (distances and top-k are differentiable), so the
adaptive attacker of ``defenses.adaptive`` descends it directly.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..errors import ConfigError
from ..models.normalize import get_layer
from ..validation import check_int, check_positive
from .base import Detector
from .detector import _logistic_regression, default_layers


def lid_mle(a: torch.Tensor, ref: torch.Tensor, k: int) -> torch.Tensor:
    """(N,) maximum-likelihood LID of each row of ``a`` (N, D) among the rows of ``ref`` (R, D):
    −(mean_i log(r_i / r_k))^(−1) over its k nearest neighbours; a zero distance (the point
    itself, when it is in ``ref``) is skipped. Differentiable in ``a``."""
    d = torch.cdist(a.float(), ref.to(a.device).float())
    d = torch.where(d > 1e-6, d, torch.full_like(d, float("inf")))
    r = d.topk(k, dim=1, largest=False).values.clamp_min(1e-12)
    return -1.0 / torch.log(r / r[:, -1:]).mean(1).clamp_max(-1e-12)


class LIDDetector(Detector):
    name = "lid"

    def __init__(self, model: nn.Module, *, layers=None, k: int = 20, n_reference: int = 100,
                 l2: float = 1e-2, batch_size: int = 64):
        super().__init__(model, batch_size=batch_size)
        self.k = check_int("k", k, minimum=2)
        self.n_reference = check_int("n_reference", n_reference, minimum=2)
        self.l2 = check_positive("l2", l2, allow_zero=True)
        self.layers = list(layers) if layers is not None else default_layers(model)
        self._modules = [get_layer(model, name) for name in self.layers]
        self.feature_names = [f"lid[{la}]" for la in self.layers] + ["lid[logits]"]
        self.reference: list[torch.Tensor] | None = None
        self.mean = self.std = self.weight = None
        self.bias = 0.0

    @contextmanager
    def _hooks(self, store: dict):
        handles = [m.register_forward_hook(lambda _m, _i, out, k=k: store.__setitem__(k, out.flatten(1)))
                   for k, m in enumerate(self._modules)]
        try:
            yield store
        finally:
            for h in handles:
                h.remove()

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        store: dict[int, torch.Tensor] = {}
        with self._hooks(store):
            logits = self.model(x)
        return [store[k] for k in range(len(self._modules))] + [logits]

    def lid(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L) per-layer LID estimates of a batch against the reference batch."""
        if self.reference is None:
            raise ConfigError("the LID detector is not fitted: call fit() first")
        return torch.stack([lid_mle(a, ref, self.k) for a, ref in zip(self.activations(x), self.reference)], 1)

    def _score_batch(self, x):
        with torch.no_grad():
            f = self.lid(x)
        if self.weight is None:
            return torch.zeros(x.shape[0]), f
        return self._combine(f).float(), f

    def _combine(self, f: torch.Tensor) -> torch.Tensor:
        z = (f.double() - self.mean.to(f.device)) / self.std.to(f.device)
        return z @ self.weight.to(f.device) + self.bias

    def score_differentiable(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """The score with its graph to x (adaptive attacks; ``target`` unused)."""
        if self.weight is None:
            raise ConfigError("the LID detector is not fitted: call fit() first")
        return self._combine(self.lid(x))

    def _fit(self, x_benign, x_adv, fpr, x_calib) -> None:
        if x_adv is None or not len(x_adv):
            raise ConfigError("the LID detector learns from adversarial examples: pass x_adv to fit()")
        if len(x_benign) < 2 * self.k + 2:
            raise ConfigError(f"the LID detector needs at least {2 * self.k + 2} benign images (k = {self.k})")
        ref, train = x_benign[0::2][:self.n_reference], x_benign[1::2]
        dev = self._device()
        with torch.no_grad():
            acts = [self.activations(ref[s:s + self.batch_size].to(dev)) for s in range(0, len(ref), self.batch_size)]
        self.reference = [torch.cat([a[i] for a in acts]).float() for i in range(len(self.feature_names))]
        fb, fa = self.features(train).double(), self.features(x_adv).double()
        both = torch.cat([fb, fa])
        self.mean, self.std = both.mean(0), both.std(0).clamp_min(1e-6)
        y = torch.cat([torch.zeros(len(fb)), torch.ones(len(fa))]).double()
        w = torch.where(y > 0, 0.5 / len(fa), 0.5 / len(fb))
        self.weight, self.bias = _logistic_regression((both - self.mean) / self.std, y, w, self.l2)
        self.calibrate(self.score(train if x_calib is None else x_calib), fpr)

    def init_params(self) -> dict:
        return {**super().init_params(), "layers": self.layers, "k": self.k, "n_reference": self.n_reference,
                "l2": self.l2}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, scalars = super().state()
        tensors.update({f"reference.{i}": r for i, r in enumerate(self.reference or [])})
        tensors.update({k: getattr(self, k) for k in ("mean", "std", "weight") if getattr(self, k) is not None})
        return tensors, {**scalars, "bias": self.bias}

    def load_state(self, tensors: dict[str, torch.Tensor], scalars: dict) -> None:
        super().load_state(tensors, scalars)
        self.reference = [tensors[f"reference.{i}"] for i in range(len(self.feature_names))]
        self.mean, self.std, self.weight = tensors["mean"], tensors["std"], tensors["weight"]
        self.bias = float(scalars["bias"])

    def config(self) -> dict:
        return {**super().config(), "layers": self.layers, "k": self.k, "n_reference": self.n_reference,
                "weight": None if self.weight is None else self.weight.tolist(), "bias": self.bias}
