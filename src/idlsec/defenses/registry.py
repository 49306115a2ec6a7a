"""Detectors by name, so that the CLI, suites (``detectors:`` of a lofo detection job) and code can
name them: ``get_detector(name, model, **kwargs)``; ``register_detector(name, factory)`` adds one.

========================  ======================================================================
``squeeze``               feature squeezing, 5-bit + 3×3 median (the issue's reference point)
``squeeze-nlm``           Xu et al.'s CIFAR-10 joint detector: 5-bit, 2×2 median, NLM 13-3-2
``lid``                   local intrinsic dimensionality (Ma et al., ICLR 2018)
``ensemble``              the multi-interpreter ensemble (deterministic squeezers)
``ensemble-random``       the ensemble with random squeezers drawn per query (``RANDOM_SQUEEZERS``)
``union``                 OR-union of ensemble-random, squeeze-nlm and lid, jointly calibrated
========================  ======================================================================
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .detector import RANDOM_SQUEEZERS, EnsembleDetector
from .lid import LIDDetector
from .squeeze import XU_CIFAR_SQUEEZERS, FeatureSqueezing
from .union import UnionDetector

DETECTORS: dict[str, Callable] = {
    "squeeze": lambda model, **kw: FeatureSqueezing(model, **kw),
    "squeeze-nlm": lambda model, **kw: FeatureSqueezing(model, **{"squeezers": XU_CIFAR_SQUEEZERS, **kw}),
    "lid": lambda model, **kw: LIDDetector(model, **kw),
    "ensemble": lambda model, **kw: EnsembleDetector(model, **kw),
    "ensemble-random": lambda model, **kw: EnsembleDetector(model, **{"squeezers": RANDOM_SQUEEZERS, **kw}),
    "union": lambda model, **kw: UnionDetector(model, factories=DETECTORS, **kw),
}


def register_detector(name: str, factory: Callable) -> None:
    """``factory(model, **kwargs)`` -> a ``Detector``."""
    if not isinstance(name, str) or not name:
        raise ConfigError("a detector name must be a non-empty string")
    DETECTORS[name] = factory


def detector_names() -> list[str]:
    return sorted(DETECTORS)


def get_detector(name: str, model, **kwargs):
    if name not in DETECTORS:
        raise ConfigError(f"unknown detector {name!r}; valid: {', '.join(detector_names())}")
    return DETECTORS[name](model, **kwargs)
