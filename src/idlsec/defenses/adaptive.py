"""Adaptive attacks: attacks that know the defense (Athalye, Carlini & Wagner, ICML 2018; Tramèr et
al., NeurIPS 2020). A defense is only measured honestly against them.

Against the detectors. ``AdaptiveADV2`` / ``AdaptiveAdvEdge`` / ``AdaptiveAdvEdgePlus`` are ADV^2
and AdvEdge(+) whose joint-stage loss also

* keeps the map of *every* interpreter of the ensemble close to its benign map,
  ``Σ_j c_j · d(g_j(x̂, c_t), g_j(x, y))`` with each interpreter's own c and distance (ADV^2's
  profiles: CAM-like 5 with a mean, Grad 0.001 with a 56x56-rescaled sum);
* descends the detector's own score, ``μ · max(0, s(x̂) − τ + margin)`` with τ the detector's
  calibrated threshold (``detector_weight`` μ = 1, ``detector_margin`` 0 by default; with an
  uncalibrated detector the raw score), through ``score_differentiable``: maps with
  ``create_graph=True`` and straight-through (BPDA) squeezers. Against a randomised detector
  (random squeezers) every step draws afresh from the attacker's own generator: expectation
  over transformation across the steps, and over ``detector_eot`` draws within a step (default
  1). A detector with an ``adaptive_term`` (``defenses.union``: an OR of detectors) supplies its
  own loss, every member's score above the union threshold descended at once.

Everything else (warm start, schedules, best-example selection, edge weighting) is the wrapped
attack's. The best example (ADV^2's selection) is the successful one with the closest primary map;
it is not re-selected for being undetected, so the reported detection rate is that of the
attack's own output.

Against input transforms. ``ThroughTransform(model, transform)`` is a differentiable stand-in for
``model(transform(x))`` that any attack can target: non-differentiable transforms (JPEG, bit
depth) pass gradients straight through (BPDA: forward T(x), backward identity); random ones
(random resize-and-pad) draw a fresh transform at every forward, so the attack's steps average
over the randomness (expectation over transformation, EOT); ``eot_samples`` > 1 also averages the
logits of several draws within one forward (classifier-only attacks: the interpreters' hooks
expect one copy of the batch).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..attacks import _idls
from ..attacks.adv2 import ADV2
from ..attacks.advedge import AdvEdge, AdvEdgePlus
from ..errors import ConfigError
from ..interpreters import Interpreter, get_interpreter
from ..validation import check_int, check_positive
from .base import Detector

NON_DIFFERENTIABLE = ("jpeg", "bitdepth")


class _Adaptive:
    """Mixin over an ADV^2-family attack: ensemble map terms and the detector's score."""

    def __init__(self, model, interpreter=None, *, detector: Detector | None = None, ensemble=None,
                 detector_weight: float = 1.0, detector_margin: float = 0.0, detector_eot: int = 1, **kwargs):
        self.detector, self.detector_weight, self.detector_margin = detector, detector_weight, detector_margin
        self.detector_eot = check_int("detector_eot", detector_eot, minimum=1)
        check_positive("detector_weight", detector_weight, allow_zero=True)
        check_positive("detector_margin", detector_margin, allow_zero=True)
        if detector is not None and not hasattr(detector, "score_differentiable"):
            raise ConfigError(f"detector {type(detector).__name__} has no differentiable score")
        if ensemble is None:
            ensemble = list(getattr(detector, "interpreters", {}).values())
        if isinstance(ensemble, str):
            ensemble = [s for s in ensemble.split(",") if s]
        primary = getattr(interpreter, "name", None)
        self.ensemble = [e if isinstance(e, Interpreter) else get_interpreter(e, model) for e in ensemble]
        self.ensemble = [e for e in self.ensemble if e.name != primary]
        for e in self.ensemble:
            if not e.differentiable:
                raise ConfigError(f"interpreter {e.name!r} is not differentiable; drop it from the ensemble")
        self._benign: list[torch.Tensor] = []
        super().__init__(model, interpreter, **kwargs)

    def get_params(self) -> dict:
        p = super().get_params()
        p["detector"] = type(self.detector).__name__ if self.detector is not None else None
        p["ensemble"] = [e.name for e in self.ensemble]
        return p

    def _run(self, x, y, target_map):
        with torch.no_grad():
            shown = self.model(x).argmax(1)
        self._benign = []
        for e in self.ensemble:
            with torch.enable_grad():
                self._benign.append(e.logits_and_maps(x, shown, create_graph=False)[1].detach())
        try:
            x_adv, info = super()._run(x, y, target_map)
        finally:
            self._benign = []
        return x_adv, info

    def _interpret(self, x_adv, cls, s, *, create_graph=True):
        logits, maps, extra = super()._interpret(x_adv, cls, s, create_graph=create_graph)
        if not create_graph:
            return logits, maps, extra
        add = torch.zeros(x_adv.shape[0], device=x_adv.device, dtype=x_adv.dtype)
        shared: dict[str, torch.Tensor] = {}
        if self.detector is not None and self.detector_weight > 0 and hasattr(self.detector, "adaptive_term"):
            # a union of detectors: every member's standardised score descended at once (EOT inside)
            term, shared = self.detector.adaptive_term(x_adv, cls, margin=self.detector_margin,
                                                       eot=self.detector_eot)
            add = add + self.detector_weight * term.to(x_adv.dtype)
        elif self.detector is not None and self.detector_weight > 0:
            if hasattr(self.detector, "interpreters"):
                score, shared = self.detector.score_differentiable(x_adv, cls, return_maps=True)
            else:
                score = self.detector.score_differentiable(x_adv, cls)
            for _ in range(self.detector_eot - 1):  # EOT within the step (random detectors)
                score = score + self.detector.score_differentiable(x_adv, cls)
            score = score / self.detector_eot
            thr = self.detector.threshold
            term = score.to(x_adv.dtype)
            term = term if thr is None else torch.relu(term - thr + self.detector_margin)
            add = add + self.detector_weight * term
        for e, benign in zip(self.ensemble, self._benign):
            prof = _idls.profile_for(e)
            m = shared.get(e.name)
            if m is None or getattr(self.detector, "interpreters", {}).get(e.name) is not e:
                m = e.logits_and_maps(x_adv, cls, create_graph=True)[1]
            add = add + prof.c * _idls.map_distance(m, benign, reduction=prof.reduction)
        return logits, maps, add if extra is None else extra + add


class AdaptiveADV2(_Adaptive, ADV2):
    """ADV^2 against the ensemble detector (all its interpreters at once) and its score."""

    name = "adaptive-adv2"


class AdaptiveAdvEdge(_Adaptive, AdvEdge):
    name = "adaptive-advedge"


class AdaptiveAdvEdgePlus(_Adaptive, AdvEdgePlus):
    name = "adaptive-advedge+"


ADAPTIVE_ATTACKS = {cls.name: cls for cls in (AdaptiveADV2, AdaptiveAdvEdge, AdaptiveAdvEdgePlus)}


def make_adaptive(name: str, model, interpreter, *, detector=None, **params):
    """``adv2``/``advedge``/``advedge+`` (or their ``adaptive-`` names) against ``detector``."""
    key = name if name.startswith("adaptive-") else f"adaptive-{name}"
    if key not in ADAPTIVE_ATTACKS:
        raise ConfigError(f"no adaptive version of attack {name!r}; valid: adv2, advedge, advedge+")
    return ADAPTIVE_ATTACKS[key](model, interpreter, detector=detector, **params)


class ThroughTransform(nn.Module):
    """``model(transform(x))`` made attackable: BPDA for non-differentiable transforms, a fresh
    random draw per forward (EOT over steps) for random ones, and optionally the mean logits of
    ``eot_samples`` draws per forward. Keeps the model's card with its layer names re-rooted, so
    interpreters built on this module explain the defended system."""

    def __init__(self, model: nn.Module, transform: nn.Module, *, bpda: bool | None = None, eot_samples: int = 1):
        super().__init__()
        self.model, self.transform = model, transform
        name = getattr(transform, "name", "")
        self.bpda = name in NON_DIFFERENTIABLE if bpda is None else bool(bpda)
        self.eot_samples = check_int("eot_samples", eot_samples, minimum=1)
        card = getattr(model, "card", None)
        if card is not None:
            root = lambda n: None if n is None else f"model.{n}"
            card = dataclasses.replace(card, cam_layer=root(card.cam_layer), fc_layer=root(card.fc_layer),
                                       gradcam_layer=root(card.gradcam_layer))
        self.card = card
        self.train(model.training)   # the wrapper starts in the model's mode (eval for a loaded model)

    def _t(self, x):
        fn = getattr(self.transform, "transform", self.transform)
        out = fn(x)
        if self.bpda:
            if out.shape != x.shape:
                raise ConfigError("straight-through (BPDA) needs a shape-preserving transform")
            return x + (out - x).detach()
        return out

    def forward(self, x):
        k = self.eot_samples
        if k == 1:
            return self.model(self._t(x))
        logits = self.model(self._t(x.repeat(k, 1, 1, 1)))
        return logits.view(k, x.shape[0], -1).mean(0)
