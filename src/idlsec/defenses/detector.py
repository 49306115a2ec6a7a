"""Multi-interpreter ensemble detector for attacks on interpretable deep learning systems.

Idea (ADV^2 §"ensemble of interpreters", the SKKU group's "ensemble-based detection"): an IDLS
attack tunes the input so that *one* interpreter shows a benign-looking map; the other
interpreters, the map's stability under input squeezing, and the prediction's stability are not
tuned and disagree. The detector measures, per input x with prediction c = argmax f(x):

* ``softmax_l1[s]``: ‖p(x) − p(s(x))‖₁ for each squeezer s (feature squeezing);
* ``pmax``, ``margin``, ``entropy``: the prediction's confidence;
* ``disagree_l1[i|j]``, ``disagree_corr[i|j]``: mean |m_i − m_j| and 1 − Pearson(m_i, m_j) between
  the min-max maps of interpreters i and j for class c, pooled to a common (coarsest) grid;
* ``instability[i,s]``: mean |m_i(x) − m_i(s(x))| (map stability under squeezing, class c fixed);
* ``mahalanobis`` (``embedding=True``; off by default: it separates PGD perfectly but not the IDLS
  attacks, and it worsens the calibration of the small benign sets of the benchmark): the
  Mahalanobis distance of the fc input (the GAP features CAM is built from) to the benign mean of
  class c, tied covariance shrunk by ``shrinkage`` (Lee et al., NeurIPS 2018). The raw feature
  vector carries ``pred`` and ``emb[i]`` columns for it; ``fit`` estimates the class statistics
  on every other benign row and trains/calibrates the combination on the rest.

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
from ..models.normalize import get_layer
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
                 squeezers=DEFAULT_SQUEEZERS, l2: float = 1e-2, batch_size: int = 64,
                 embedding: bool = False, shrinkage: float = 0.1, interpreter_kwargs: dict | None = None):
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
        card = getattr(model, "card", None)
        self.num_classes = card.num_classes if card is not None else None
        fc_name = getattr(card, "fc_layer", None)
        if embedding and fc_name is None:
            raise ConfigError("embedding=True needs a model whose card names its fc_layer")
        self.fc = get_layer(model, fc_name) if embedding else None
        self.shrinkage = check_positive("shrinkage", shrinkage, allow_zero=True)
        self.n_base = len(self.feature_names)
        if self.fc is not None:
            self.feature_names += ["pred"] + [f"emb[{i}]" for i in range(self.fc.in_features)]
        self.combined_names = self.feature_names[:self.n_base] + (["mahalanobis"] if self.fc is not None else [])
        self.class_means: torch.Tensor | None = None  # (K, D) benign embedding means, float64
        self.precision: torch.Tensor | None = None    # (D, D) tied, shrunk inverse covariance
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
            if self.fc is not None:
                store = {}
                handle = self.fc.register_forward_pre_hook(lambda _m, inp: store.__setitem__("emb", inp[0]))
                try:
                    logits_all = self.model(xs)
                finally:
                    handle.remove()
            else:
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
            if self.fc is not None:
                emb = store["emb"][:n].flatten(1).to(out.dtype)
                out = torch.cat([out, logits.detach().argmax(1).to(out.dtype).unsqueeze(1), emb], dim=1)
        out = out if differentiable else out.detach()
        if return_maps:
            return out, {name: m[:n] for name, m in zip(self.interpreters, maps)}
        return out

    def _derived(self, f: torch.Tensor) -> torch.Tensor:
        """The combined features: the base features plus, with an embedding, the Mahalanobis
        distance of the fc input to the benign mean of the predicted class (Lee et al., NeurIPS
        2018; tied covariance, shrunk towards its mean eigenvalue)."""
        base = f[:, :self.n_base].double()
        if self.fc is None:
            return base
        if self.class_means is None:
            raise ConfigError("the detector is not fitted: call fit() first")
        pred = f[:, self.n_base].detach().round().long().clamp(0, self.class_means.shape[0] - 1)
        d = f[:, self.n_base + 1:].double() - self.class_means.to(f.device)[pred]
        maha = ((d @ self.precision.to(f.device)) * d).sum(1)
        return torch.cat([base, maha.unsqueeze(1)], dim=1)

    def _fit_embedding(self, fb: torch.Tensor) -> None:
        emb = fb[:, self.n_base + 1:].double()
        pred = fb[:, self.n_base].round().long()
        k = int(self.num_classes or int(pred.max()) + 1)
        means = emb.mean(0, keepdim=True).repeat(k, 1)
        for c in pred.unique().tolist():
            means[c] = emb[pred == c].mean(0)
        centred = emb - means[pred]
        cov = centred.T @ centred / max(len(emb) - 1, 1)
        target = torch.eye(cov.shape[0], dtype=cov.dtype) * cov.diagonal().mean()
        self.class_means = means
        self.precision = torch.linalg.inv((1 - self.shrinkage) * cov + self.shrinkage * target)

    def _score_features(self, f: torch.Tensor) -> torch.Tensor:
        """Combine (N, F) features into (N,) scores (differentiable in f)."""
        names = self.combined_names
        if self.score_kind == "disagreement":
            idx = [k for k, nm in enumerate(names) if nm.startswith("disagree_l1")]
            return f[:, idx].mean(1)
        if self.mean is None:
            raise ConfigError(f"the {self.score_kind!r} score is not fitted: call fit() first")
        z = (self._derived(f) - self.mean.to(f.device)) / self.std.to(f.device)
        if self.score_kind == "zmax":
            idx = [k for k, nm in enumerate(names)
                   if nm.startswith(("disagree", "instability", "softmax_l1", "mahalanobis"))]
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
        if self.fc is not None and self.score_kind != "disagreement":
            # class statistics from every other benign row; the rest trains and calibrates the score,
            # so that the threshold sees out-of-sample Mahalanobis distances
            self._fit_embedding(f_benign[0::2])
            f_benign = f_benign[1::2]
        if self.score_kind == "logistic":
            if f_adv is None:
                raise ConfigError("score='logistic' learns from adversarial examples: pass x_adv to fit(), "
                                  "or use score='zmax' to fit on benign data alone")
            fb, fa = self._derived(f_benign), self._derived(f_adv)
            both = torch.cat([fb, fa])
            self.mean, self.std = both.mean(0), both.std(0).clamp_min(1e-6)
            z = (both - self.mean) / self.std
            y = torch.cat([torch.zeros(len(fb)), torch.ones(len(fa))]).double()
            w_cls = torch.where(y > 0, 0.5 / len(fa), 0.5 / len(fb))
            self.weight, self.bias = _logistic_regression(z, y, w_cls, self.l2)
        elif self.score_kind == "zmax":
            fb = self._derived(f_benign)
            self.mean, self.std = fb.mean(0), fb.std(0).clamp_min(1e-6)
        if fpr is not None:
            self.calibrate(self.score_features(f_benign if f_calib is None else f_calib), fpr)
        return self

    def coefficients(self) -> dict[str, float]:
        """The logistic weights per (standardised) feature: what the detector relies on."""
        if self.weight is None:
            return {}
        return {n: float(w) for n, w in zip(self.combined_names, self.weight)}

    def config(self) -> dict:
        return {**super().config(), "interpreters": list(self.interpreters), "squeezers": self.squeezers,
                "score": self.score_kind, "feature_names": self.feature_names,
                "mean": None if self.mean is None else self.mean.tolist(),
                "std": None if self.std is None else self.std.tolist(),
                "weight": None if self.weight is None else self.weight.tolist(), "bias": self.bias,
                "combined_names": self.combined_names,
                "class_means": None if self.class_means is None else self.class_means.tolist(),
                "precision": None if self.precision is None else self.precision.tolist()}


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
