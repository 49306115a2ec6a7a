"""Defenses: input transforms, detectors (feature squeezing, ensemble of interpreters), a stateful
query monitors for the black-box oracle (BlackLight, PIHA)."""

from .adaptive import (
    AdaptiveADV2,
    AdaptiveAdvEdge,
    AdaptiveAdvEdgePlus,
    ThroughTransform,
    make_adaptive,
)
from .adversarial_training import AdversarialTrainer, MapPGD, TradesPGD
from .base import DetectionReport, Detector
from .detector import EnsembleDetector
from .perceptual import PIHA
from .squeeze import FeatureSqueezing, bit_depth, median_smooth, parse_squeezer
from .stateful import BlackLight
from .transforms import (
    DEFENSES,
    BitDepthReduction,
    DefendedModel,
    InputTransform,
    JPEGCompression,
    MedianFilter,
    RandomResizePad,
    defend,
    get_defense,
)

__all__ = [
    "DEFENSES",
    "AdaptiveADV2",
    "AdaptiveAdvEdge",
    "AdaptiveAdvEdgePlus",
    "AdversarialTrainer",
    "BitDepthReduction",
    "BlackLight",
    "DefendedModel",
    "DetectionReport",
    "Detector",
    "EnsembleDetector",
    "FeatureSqueezing",
    "InputTransform",
    "JPEGCompression",
    "MapPGD",
    "TradesPGD",
    "MedianFilter",
    "PIHA",
    "RandomResizePad",
    "ThroughTransform",
    "bit_depth",
    "defend",
    "get_defense",
    "make_adaptive",
    "median_smooth",
    "parse_squeezer",
]
