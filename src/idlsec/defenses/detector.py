"""Multi-interpreter ensemble detector for attacks on interpretable deep learning systems.

Idea (ADV^2 §"ensemble of interpreters", the SKKU group's "ensemble-based detection"): an IDLS
attack tunes the input so that *one* interpreter shows a benign-looking map and the classifier
shows the target class; the squeezed copies of the input, the other interpreters, the maps of the
squeezed copies and the hidden features are not tuned. Per input x with prediction c = argmax f(x)
and squeezers s (default 5- and 4-bit depth, 2×2 and 3×3 median):

* ``softmax_l1[s]`` ‖p(x) − p(s(x))‖₁ (feature squeezing, Xu et al. NDSS 2018), ``logit_drop[s]``
  l_c(x) − l_c(s(x)), ``kl[s]`` KL(p(x) ‖ p(s(x))), ``logit_l1[s]`` ‖l(x) − l(s(x))‖₁;
* ``pmax``, ``margin``, ``entropy``: the prediction's confidence;
* ``disagree_l1[i|j]``, ``disagree_corr[i|j]``: mean |m_i − m_j| and 1 − Pearson(m_i, m_j) between
  the min-max maps of interpreters i and j for class c, pooled to a common (coarsest) grid;
* ``instability[i,s]``: mean |m_i(x) − m_i(s(x))| for the ``map_squeezers`` (default the medians);
* with ``embedding`` (default): per hidden layer L (default every residual block, ``layers``) of
  GAP features e_L, ``emb_shift[s,L]`` ‖e_L(x) − e_L(s(x))‖ / ‖e_L(x)‖ and ``mahalanobis[L]``, the
  Mahalanobis distance of e_L(x) to the benign mean of class c, tied covariance shrunk by
  ``shrinkage`` (Lee et al., NeurIPS 2018: per-layer distances combined by a logistic
  regression). The raw feature vector carries ``pred`` and the ``emb[L][i]`` columns for it;
  ``fit`` estimates the class statistics on the benign fit rows.

``score`` combines them:
* ``"logistic"`` (default): L2-regularised logistic regression on standardised features, trained
  by ``fit(x_benign, x_adv)`` (full-batch L-BFGS, float64, class-balanced: deterministic);
* ``"zmax"``: unsupervised, the largest benign z-score among the squeezing, disagreement,
  instability and Mahalanobis features (``fit(x_benign)`` alone);
* ``"disagreement"``: the mean pairwise map disagreement alone (the issue's minimal baseline).

In every case the threshold is the benign (1 − fpr) quantile of the calibration scores, on
``x_calib`` when given (benign images the combination was not fitted on; recommended), else on
half of the benign rows (the class statistics then come from the other half).
``score_differentiable(x, target)`` recomputes the score with ``create_graph=True`` maps and
straight-through squeezers so that adaptive attacks can descend it (``defenses.adaptive``).

Randomised (``ensemble-random``, ``RANDOM_SQUEEZERS``): squeezers with random parameters
(``"bits:3|bits:4|bits:5"``: one alternative per image; ``"noise:S"``) draw, at every query, from
a generator seeded by ``seed``; the features the combination is fitted on are drawn the same
way. ``score_differentiable`` draws from a second generator, so that an adaptive attacker takes
its expectation over the randomness (EOT over its steps) without knowing the defender's draws.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..interpreters import Interpreter, get_interpreter
from ..interpreters.base import minmax
from ..models.normalize import get_layer
from ..validation import check_choice, check_positive
from .base import Detector
from .squeeze import parse_squeezer, softmax_l1

SCORES = ("logistic", "zmax", "disagreement")
ENSEMBLE_SQUEEZERS = ("bits:5", "bits:4", "median:2", "median:3")
RANDOM_SQUEEZERS = ("bits:3|bits:4|bits:5", "median:2|median:3", "nlm:13-3-4|nlm:13-3-8", "noise:4|noise:8")


def _pool(maps: torch.Tensor, size: int) -> torch.Tensor:
    if maps.shape[-1] != size or maps.shape[-2] != size:
        maps = F.adaptive_avg_pool2d(maps, size)
    return minmax(maps).flatten(1)


def _corr_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return 1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)


def default_layers(model: nn.Module) -> list[str]:
    """Every block of the stages beside the card's CAM layer (``net.layer1.0`` … ``net.layer3.2`` for
    a CIFAR ResNet): the residual blocks whose statistics Lee et al. use; else the CAM layer. A
    card without a CAM layer (a user model): the one layer discovery finds (CAM's, else
    Grad-CAM's convolutional layer)."""
    card = getattr(model, "card", None)
    cam = getattr(card, "cam_layer", None)
    if cam is None and card is not None:
        from ..interpreters.layers import find_cam_layers, find_gradcam_layer

        try:
            cam = find_cam_layers(model, card.input_size)[0]
        except ConfigError:
            name, reshape = find_gradcam_layer(model, card.input_size)
            cam = name if reshape is None else None
    if cam is None:
        raise ConfigError("embedding=True needs layers=[...] or a model whose card names its cam_layer")
    parent_name, _, _ = cam.rpartition(".")
    parent = get_layer(model, parent_name) if parent_name else model
    out = [f"{parent_name}.{name}.{i}".lstrip(".") for name, child in parent.named_children()
           if isinstance(child, nn.Sequential) for i in range(len(child))]
    return out or [cam]


class EnsembleDetector(Detector):
    """Flags inputs whose interpreters, squeezed copies, prediction and hidden features are not
    those of benign inputs."""

    name = "ensemble"

    def __init__(self, model: nn.Module, interpreters=("cam", "gradcam", "grad"), *, score: str = "logistic",
                 squeezers=ENSEMBLE_SQUEEZERS, map_squeezers=None, l2: float = 1e-2, batch_size: int = 64,
                 embedding: bool = True, layers=None, shrinkage: float = 0.1,
                 interpreter_kwargs: dict | None = None, seed: int = 0):
        super().__init__(model, batch_size=batch_size)
        if isinstance(interpreters, str):
            interpreters = [s for s in interpreters.split(",") if s]
        if isinstance(squeezers, str):
            squeezers = [s for s in squeezers.split(",") if s]
        if isinstance(map_squeezers, str):
            map_squeezers = [s for s in map_squeezers.split(",") if s]
        if not interpreters:
            raise ConfigError("the ensemble detector needs at least one interpreter")
        self.interpreter_kwargs = dict(interpreter_kwargs or {})
        self._by_name = all(isinstance(it, str) for it in interpreters)  # rebuildable from a file
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
        # random squeezers (noise:S, a|b): queries draw from `generator`, the adaptive attacker's
        # score_differentiable from an independent one (it knows the distribution, not the seed)
        self.seed = int(seed)
        self.random = any(f.random for f in self._sq)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.attack_generator = torch.Generator().manual_seed(2**31 - 1 - self.seed)
        if map_squeezers is None:
            map_squeezers = [s for s in self.squeezers if s.startswith("median")]
        for s in map_squeezers:
            if s not in self.squeezers:
                raise ConfigError(f"map squeezer {s!r} is not among the squeezers {self.squeezers}")
        self.map_squeezers = list(map_squeezers)
        self._map_copies = [0] + [1 + self.squeezers.index(s) for s in self.map_squeezers]
        self.l2 = check_positive("l2", l2, allow_zero=True)
        self.shrinkage = check_positive("shrinkage", shrinkage, allow_zero=True)
        if self.shrinkage > 1:
            raise ConfigError(f"shrinkage must be in [0, 1], got {shrinkage}")
        names = list(self.interpreters)
        self.pairs = list(itertools.combinations(range(len(names)), 2))
        card = getattr(model, "card", None)
        self.num_classes = card.num_classes if card is not None else None
        self.layers: list[str] = []
        self._layer_modules: list[nn.Module] = []
        dims: list[int] = []
        if embedding:
            if self.input_size is None or self.num_classes is None:
                raise ConfigError("embedding=True needs a model with a card (input size, number of classes)")
            self.layers = list(layers) if layers is not None else default_layers(model)
            if not self.layers:
                raise ConfigError("embedding=True needs at least one layer")
            self._layer_modules = [get_layer(model, name) for name in self.layers]
            dims = self._layer_dims()
        self.feature_names = ([f"{k}[{s}]" for s in self.squeezers
                               for k in ("softmax_l1", "logit_drop", "kl", "logit_l1")]
                              + ["pmax", "margin", "entropy"]
                              + [f"disagree_l1[{names[i]}|{names[j]}]" for i, j in self.pairs]
                              + [f"disagree_corr[{names[i]}|{names[j]}]" for i, j in self.pairs]
                              + [f"instability[{n},{s}]" for n in names for s in self.map_squeezers]
                              + [f"emb_shift[{s},{la}]" for s in self.squeezers for la in self.layers])
        self.n_base = len(self.feature_names)
        self._emb_slices: list[slice] = []
        start = self.n_base + 1
        for la, d in zip(self.layers, dims):
            self._emb_slices.append(slice(start, start + d))
            self.feature_names += [f"emb[{la}][{i}]" for i in range(d)]
            start += d
        if self.layers:
            self.feature_names.insert(self.n_base, "pred")
        self.combined_names = self.feature_names[:self.n_base] + [f"mahalanobis[{la}]" for la in self.layers]
        self.class_means: list[torch.Tensor] | None = None  # per layer (K, D) benign means, float64
        self.precision: list[torch.Tensor] | None = None    # per layer (D, D) tied, shrunk inverse covariance
        self.mean: torch.Tensor | None = None   # feature standardisation (float64)
        self.std: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None  # logistic weights (F,) and bias
        self.bias: float = 0.0

    # --- features -----------------------------------------------------------------------------
    def _layer_dims(self) -> list[int]:
        store: dict[int, torch.Tensor] = {}
        with self._hooks(store), torch.no_grad():
            self.model(torch.zeros(1, *self.input_size, device=self._device()))
        return [store[k].shape[1] for k in range(len(self._layer_modules))]

    @contextmanager
    def _hooks(self, store: dict):
        """Record the spatial mean (GAP) of every embedding layer's output into ``store``."""
        def hook(k):
            return lambda _m, _i, out: store.__setitem__(k, out.flatten(2).mean(2) if out.dim() > 2 else out)
        handles = [m.register_forward_hook(hook(k)) for k, m in enumerate(self._layer_modules)]
        try:
            yield store
        finally:
            for h in handles:
                h.remove()

    def compute_features(self, x: torch.Tensor, target: torch.Tensor | None = None, *,
                         differentiable: bool = False, return_maps: bool = False):
        """(N, F) features of a batch already on the model's device (no validation).

        ``target``: the class the maps explain (default: the prediction on x). ``return_maps``:
        also return {interpreter name: its (N, 1, h, w) map of x} (reused by adaptive attacks)."""
        sq = self._sq_st if differentiable else self._sq
        gen = self.attack_generator if differentiable else self.generator
        n, ns = x.shape[0], len(sq)
        with torch.set_grad_enabled(differentiable or torch.is_grad_enabled()):
            xs = torch.cat([x] + [fn(x, generator=gen) for fn in sq])
            store: dict[int, torch.Tensor] = {}
            with self._hooks(store):
                logits_all = self.model(xs)
            logits = logits_all[:n]
            if target is None:
                target = logits.detach().argmax(1)
            lg = logits_all.view(ns + 1, n, -1)
            logp = F.log_softmax(lg, 2)
            probs = logp.exp()
            p, lc = probs[0], lg[:, torch.arange(n, device=x.device), target]  # lc: (S+1, N)
            feats = []
            for k in range(1, ns + 1):
                feats += [softmax_l1(p, probs[k]), lc[0] - lc[k], (p * (logp[0] - logp[k])).sum(1),
                          (lg[0] - lg[k]).abs().sum(1)]
            top2 = logits.topk(2, dim=1).values
            feats += [p.max(1).values, top2[:, 0] - top2[:, 1], -(p * logp[0]).sum(1)]
            copies = torch.tensor(self._map_copies, device=x.device)
            xm = xs.view(ns + 1, *x.shape).index_select(0, copies).flatten(0, 1)
            tm = target.repeat(len(self._map_copies))
            maps = []
            for interp in self.interpreters.values():
                m = interp(xm, tm) if not differentiable else interp.logits_and_maps(xm, tm, create_graph=True)[1]
                maps.append(m)
            size = min(min(m.shape[-2:]) for m in maps)
            pooled = [_pool(m, size).view(len(self._map_copies), n, -1) for m in maps]
            feats += [(pooled[i][0] - pooled[j][0]).abs().mean(1) for i, j in self.pairs]
            feats += [_corr_distance(pooled[i][0], pooled[j][0]) for i, j in self.pairs]
            feats += [(pm[0] - pm[k]).abs().mean(1) for pm in pooled for k in range(1, len(self._map_copies))]
            embs = [store[k].view(ns + 1, n, -1) for k in range(len(self._layer_modules))]
            feats += [(e[0] - e[k]).norm(dim=1) / e[0].norm(dim=1).clamp_min(1e-8)
                      for k in range(1, ns + 1) for e in embs]
            out = torch.stack(feats, dim=1)
            if self.layers:
                out = torch.cat([out, logits.detach().argmax(1).to(out.dtype).unsqueeze(1)]
                                + [e[0].to(out.dtype) for e in embs], dim=1)
        out = out if differentiable else out.detach()
        if return_maps:
            return out, {name: m[:n] for name, m in zip(self.interpreters, maps)}
        return out

    def _derived(self, f: torch.Tensor) -> torch.Tensor:
        """The combined features: the base features plus, per embedding layer, the Mahalanobis
        distance of its GAP features to the benign mean of the predicted class (Lee et al.,
        NeurIPS 2018; tied covariance, shrunk towards its mean eigenvalue)."""
        base = f[:, :self.n_base].double()
        if not self.layers:
            return base
        if self.class_means is None:
            raise ConfigError("the detector is not fitted: call fit() first")
        pred = f[:, self.n_base].detach().round().long().clamp(0, self.class_means[0].shape[0] - 1)
        cols = [base]
        for sl, means, prec in zip(self._emb_slices, self.class_means, self.precision):
            d = f[:, sl].double() - means.to(f.device)[pred]
            cols.append(((d @ prec.to(f.device)) * d).sum(1, keepdim=True))
        return torch.cat(cols, dim=1)

    def _fit_embedding(self, fb: torch.Tensor) -> None:
        pred = fb[:, self.n_base].round().long()
        k = int(self.num_classes or int(pred.max()) + 1)
        self.class_means, self.precision = [], []
        for sl in self._emb_slices:
            emb = fb[:, sl].double()
            means = emb.mean(0, keepdim=True).repeat(k, 1)
            for c in pred.unique().tolist():
                means[c] = emb[pred == c].mean(0)
            centred = emb - means[pred]
            cov = centred.T @ centred / max(len(emb) - 1, 1)
            target = torch.eye(cov.shape[0], dtype=cov.dtype) * cov.diagonal().mean().clamp_min(1e-12)
            self.class_means.append(means)
            self.precision.append(torch.linalg.inv((1 - self.shrinkage) * cov + self.shrinkage * target))

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
                   if nm.startswith(("disagree", "instability", "softmax_l1", "logit_drop", "kl[", "emb_shift",
                                     "mahalanobis"))]
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
    def _fit(self, x_benign, x_adv, fpr, x_calib) -> None:
        """Learn the combination on ``x_benign`` vs ``x_adv`` and set the threshold at ``fpr`` on
        ``x_calib`` (benign images held out from the fit; without it, on part of ``x_benign``)."""
        feats = [None if v is None else self.features(v) for v in (x_benign, x_adv, x_calib)]
        self.fit_features(feats[0], feats[1], fpr=fpr, f_calib=feats[2])

    def fit_features(self, f_benign: torch.Tensor, f_adv: torch.Tensor | None = None, *,
                     fpr: float | None = None, f_calib: torch.Tensor | None = None) -> EnsembleDetector:
        """Learn from precomputed features; with ``fpr`` also calibrate the threshold (on
        ``f_calib`` if given, else on ``f_benign``)."""
        if self.layers and self.score_kind != "disagreement":
            if fpr is not None and f_calib is None:
                # the threshold must see out-of-sample Mahalanobis distances: class statistics from
                # every other benign row, the rest trains and calibrates the combination
                self._fit_embedding(f_benign[0::2])
                f_benign = f_benign[1::2]
            else:
                self._fit_embedding(f_benign)
        if self.score_kind == "logistic":
            if f_adv is None:
                raise ConfigError("score='logistic' learns from adversarial examples: pass x_adv to fit(), "
                                  "or use score='zmax' to fit on benign data alone")
            if not len(f_adv):
                raise ConfigError("score='logistic' learns from adversarial examples, and none were "
                                  "given (no attack succeeded: raise the attack's steps or eps, or "
                                  "use more images)")
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

    def init_params(self) -> dict:
        if not self._by_name:
            raise ConfigError("an ensemble detector built from Interpreter objects cannot be saved: "
                              "name the interpreters (and give interpreter_kwargs)")
        return {**super().init_params(), "interpreters": list(self.interpreters), "score": self.score_kind,
                "squeezers": self.squeezers, "map_squeezers": self.map_squeezers, "l2": self.l2,
                "embedding": bool(self.layers), "layers": self.layers or None, "shrinkage": self.shrinkage,
                "interpreter_kwargs": self.interpreter_kwargs, "seed": self.seed}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, scalars = super().state()
        for key in ("mean", "std", "weight"):
            if getattr(self, key) is not None:
                tensors[key] = getattr(self, key)
        for i, (m, p) in enumerate(zip(self.class_means or [], self.precision or [])):
            tensors[f"class_means.{i}"], tensors[f"precision.{i}"] = m, p
        return tensors, {**scalars, "bias": self.bias}

    def load_state(self, tensors: dict[str, torch.Tensor], scalars: dict) -> None:
        super().load_state(tensors, scalars)
        self.mean, self.std, self.weight = (tensors.get(k) for k in ("mean", "std", "weight"))
        if self.layers and "class_means.0" in tensors:
            self.class_means = [tensors[f"class_means.{i}"] for i in range(len(self.layers))]
            self.precision = [tensors[f"precision.{i}"] for i in range(len(self.layers))]
        self.bias = float(scalars["bias"])

    def config(self) -> dict:
        return {**super().config(), "interpreters": list(self.interpreters), "squeezers": self.squeezers,
                "seed": self.seed,
                "map_squeezers": self.map_squeezers, "layers": self.layers, "shrinkage": self.shrinkage,
                "score": self.score_kind, "feature_names": self.feature_names,
                "mean": None if self.mean is None else self.mean.tolist(),
                "std": None if self.std is None else self.std.tolist(),
                "weight": None if self.weight is None else self.weight.tolist(), "bias": self.bias,
                "combined_names": self.combined_names,
                "class_means": None if self.class_means is None else [m.tolist() for m in self.class_means],
                "precision": None if self.precision is None else [p.tolist() for p in self.precision]}


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
