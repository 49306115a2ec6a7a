"""Multi-interpreter ensemble detector for attacks on interpretable deep learning systems.

Idea (ADV^2 §"ensemble of interpreters", the SKKU group's "ensemble-based detection"): an IDLS
attack tunes the input so that *one* interpreter shows a benign-looking map; the other
interpreters, the map's stability under input squeezing, and the prediction's stability are not
tuned and disagree. The detector measures, per input x with prediction c = argmax f(x):

* ``softmax_l1[s]``: ‖p(x) − p(s(x))‖₁ for each squeezer s (feature squeezing);
* ``pmax``, ``margin``, ``entropy``: the prediction's confidence;
* ``disagree_l1[i|j]``, ``disagree_corr[i|j]``: mean |m_i − m_j| and 1 − Pearson(m_i, m_j) between
  the min-max maps of interpreters i and j for class c, pooled to a common (coarsest) grid;
* ``instability[i,s]``: mean |m_i(x) − m_i(s(x))| (map stability under squeezing, class c fixed).

``score`` combines them:
* ``"logistic"`` (default): L2-regularised logistic regression on standardised features, trained
  by ``fit(x_benign, x_adv)`` (full-batch L-BFGS, float64, class-balanced: deterministic);
* ``"zmax"``: unsupervised, the largest benign z-score among the disagreement and instability
  features (``fit(x_benign)`` alone);
* ``"disagreement"``: the mean pairwise map disagreement alone (the issue's minimal baseline).

In every case the threshold is the benign (1 − fpr) quantile of the calibration scores.
``score_differentiable(x, target)`` recomputes the score with ``create_graph=True`` maps and
straight-through squeezers so that adaptive attacks can descend it (``defenses.adaptive``).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..interpreters import Interpreter, get_interpreter
from ..interpreters.base import minmax
from ..validation import check_choice, check_positive
from .base import Detector
from .squeeze import DEFAULT_SQUEEZERS, parse_squeezer, softmax_l1

SCORES = ("logistic", "zmax", "disagreement")


def _pool(maps: torch.Tensor, size: int) -> torch.Tensor:
    if maps.shape[-1] != size or maps.shape[-2] != size:
        maps = F.adaptive_avg_pool2d(maps, size)
    return minmax(maps).flatten(1)


def _corr_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return 1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)


class EnsembleDetector(Detector):
    """Flags inputs whose interpreters, squeezed copies and prediction disagree."""

    name = "ensemble"

    def __init__(self, model: nn.Module, interpreters=("cam", "gradcam", "grad"), *, score: str = "logistic",
                 squeezers=DEFAULT_SQUEEZERS, l2: float = 1e-3, batch_size: int = 64,
                 interpreter_kwargs: dict | None = None):
        super().__init__(model, batch_size=batch_size)
        if isinstance(interpreters, str):
            interpreters = [s for s in interpreters.split(",") if s]
        if isinstance(squeezers, str):
            squeezers = [s for s in squeezers.split(",") if s]
        if not interpreters:
            raise ConfigError("the ensemble detector needs at least one interpreter")
        self.interpreters: dict[str, Interpreter] = {}
        for it in interpreters:
            if isinstance(it, Interpreter):
                self.interpreters[it.name] = it
            else:
                kw = (interpreter_kwargs or {}).get(it, {})
                self.interpreters[it] = get_interpreter(it, model, **kw)
        self.score_kind = check_choice("score", score, SCORES)
        if score == "disagreement" and len(self.interpreters) < 2:
            raise ConfigError("score='disagreement' needs at least two interpreters")
        self.squeezers = list(squeezers)
        self._sq = [parse_squeezer(s) for s in self.squeezers]
        self._sq_st = [parse_squeezer(s, straight_through=True) for s in self.squeezers]
        self.l2 = check_positive("l2", l2, allow_zero=True)
        names = list(self.interpreters)
        self.pairs = list(itertools.combinations(range(len(names)), 2))
        self.feature_names = ([f"softmax_l1[{s}]" for s in self.squeezers] + ["pmax", "margin", "entropy"]
                              + [f"disagree_l1[{names[i]}|{names[j]}]" for i, j in self.pairs]
                              + [f"disagree_corr[{names[i]}|{names[j]}]" for i, j in self.pairs]
                              + [f"instability[{n},{s}]" for n in names for s in self.squeezers])
        self.mean: torch.Tensor | None = None   # feature standardisation (float64)
        self.std: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None  # logistic weights (F,) and bias
        self.bias: float = 0.0

    # --- features -----------------------------------------------------------------------------
    def compute_features(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
                         differentiable: bool = False, return_maps: bool = False):
        """(N, F) features of a batch already on the model's device (no validation).

        ``target``: the class the maps explain (default: the prediction on x). ``return_maps``:
        also return {interpreter name: its (N, 1, h, w) map of x} (reused by adaptive attacks)."""
        sq = self._sq_st if differentiable else self._sq
        n, ns = x.shape[0], len(sq)
        with torch.set_grad_enabled(differentiable or torch.is_grad_enabled()):
            xs = torch.cat([x] + [fn(x) for fn in sq])
            logits_all = self.model(xs)
            logits = logits_all[:n]
            if target is None:
                target = logits.detach().argmax(1)
            probs = F.softmax(logits_all, 1).view(ns + 1, n, -1)
            feats = [softmax_l1(probs[0], probs[k + 1]) for k in range(ns)]
            top2 = logits.topk(2, dim=1).values
            p = probs[0]
            feats += [p.max(1).values, top2[:, 0] - top2[:, 1], -(p * p.clamp_min(1e-12).log()).sum(1)]
            maps = []
            for interp in self.interpreters.values():
                m = interp(xs, target.repeat(ns + 1), create_graph=differentiable) if not differentiable \
                    else interp.logits_and_maps(xs, target.repeat(ns + 1), create_graph=True)[1]
                maps.append(m)
            size = min(min(m.shape[-2:]) for m in maps)
            pooled = [_pool(m, size).view(ns + 1, n, -1) for m in maps]
            feats += [(pooled[i][0] - pooled[j][0]).abs().mean(1) for i, j in self.pairs]
            feats += [_corr_distance(pooled[i][0], pooled[j][0]) for i, j in self.pairs]
            feats += [(pm[0] - pm[k + 1]).abs().mean(1) for pm in pooled for k in range(ns)]
            out = torch.stack(feats, dim=1)
        out = out if differentiable else out.detach()
        if return_maps:
            return out, {name: m[:n] for name, m in zip(self.interpreters, maps)}
        return out

    def _score_features(self, f: torch.Tensor) -> torch.Tensor:
        """Combine (N, F) features into (N,) scores (differentiable in f)."""
        names = self.feature_names
        if self.score_kind == "disagreement":
            idx = [k for k, nm in enumerate(names) if nm.startswith("disagree_l1")]
            return f[:, idx].mean(1)
        if self.mean is None:
            raise ConfigError(f"the {self.score_kind!r} score is not fitted: call fit() first")
        z = (f.double() - self.mean.to(f.device)) / self.std.to(f.device)
        if self.score_kind == "zmax":
            idx = [k for k, nm in enumerate(names) if nm.startswith(("disagree", "instability", "softmax_l1"))]
            return z[:, idx].max(1).values
        return z @ self.weight.to(f.device) + self.bias

    def _score_batch(self, x):
        f = self.compute_features(x)
        if self.score_kind != "disagreement" and self.mean is None:
            return torch.zeros(x.shape[0]), f
        return self._score_features(f).float(), f

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """Scores from precomputed ``features(x)`` (lets a benchmark compute features once)."""
        return self._score_features(features).float()

    def score_differentiable(self, x: torch.Tensor, target: torch.Tensor, *, return_maps: bool = False):
        """(N,) score with a graph to x, maps explaining ``target`` (adaptive attacks); with
        ``return_maps`` also the interpreters' maps of x (see ``compute_features``)."""
        for name, it in self.interpreters.items():
            if not it.differentiable:
                raise ConfigError(f"interpreter {name!r} is not differentiable; an adaptive attack cannot "
                                  "descend the detector's score through it")
        f, maps = self.compute_features(x, target, differentiable=True, return_maps=True)
        score = self._score_features(f)
        return (score, maps) if return_maps else score

    # --- learning -----------------------------------------------------------------------------
    def _learn(self, x_benign, x_adv):
        fb = self.features(x_benign)
        fa = self.features(x_adv) if x_adv is not None else None
        self.fit_features(fb, fa)

    def fit_features(self, f_benign: torch.Tensor, f_adv: torch.Tensor | None = None, *,
                     fpr: float | None = None, f_calib: torch.Tensor | None = None) -> EnsembleDetector:
        """Learn from precomputed features; with ``fpr`` also calibrate the threshold (on
        ``f_calib`` if given, else on ``f_benign``)."""
        if self.score_kind == "logistic":
            if f_adv is None:
                raise ConfigError("score='logistic' learns from adversarial examples: pass x_adv to fit(), "
                                  "or use score='zmax' to fit on benign data alone")
            fb, fa = f_benign.double(), f_adv.double()
            both = torch.cat([fb, fa])
            self.mean, self.std = both.mean(0), both.std(0).clamp_min(1e-6)
            z = (both - self.mean) / self.std
            y = torch.cat([torch.zeros(len(fb)), torch.ones(len(fa))]).double()
            w_cls = torch.where(y > 0, 0.5 / len(fa), 0.5 / len(fb))
            self.weight, self.bias = _logistic_regression(z, y, w_cls, self.l2)
        elif self.score_kind == "zmax":
            fb = f_benign.double()
            self.mean, self.std = fb.mean(0), fb.std(0).clamp_min(1e-6)
        if fpr is not None:
            self.calibrate(self.score_features(f_benign if f_calib is None else f_calib), fpr)
        return self

    def coefficients(self) -> dict[str, float]:
        """The logistic weights per (standardised) feature: what the detector relies on."""
        if self.weight is None:
            return {}
        return {n: float(w) for n, w in zip(self.feature_names, self.weight)}

    def config(self) -> dict:
        return {**super().config(), "interpreters": list(self.interpreters), "squeezers": self.squeezers,
                "score": self.score_kind, "feature_names": self.feature_names,
                "mean": None if self.mean is None else self.mean.tolist(),
                "std": None if self.std is None else self.std.tolist(),
                "weight": None if self.weight is None else self.weight.tolist(), "bias": self.bias}


def _logistic_regression(z: torch.Tensor, y: torch.Tensor, sample_w: torch.Tensor, l2: float,
                         iters: int = 200) -> tuple[torch.Tensor, float]:
    """Weighted L2-regularised logistic regression by full-batch L-BFGS (deterministic)."""
    w = torch.zeros(z.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=iters, tolerance_grad=1e-10, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logit = z @ w[:-1] + w[-1]
        loss = (sample_w * F.binary_cross_entropy_with_logits(logit, y, reduction="none")).sum()
        loss = loss + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w = w.detach()
    return w[:-1].clone(), float(w[-1])
