"""Defenses: input transforms, detectors (feature squeezing, ensemble of interpreters), a stateful
query monitors for the black-box oracle (BlackLight, PIHA, and DetectorGate, a monitor with a
detector in front)."""

from .adaptive import (
    AdaptiveADV2,
    AdaptiveAdvEdge,
    AdaptiveAdvEdgePlus,
    ThroughTransform,
    make_adaptive,
)
from .adversarial_training import AdversarialTrainer, MapPGD, TradesPGD
from .base import DetectionReport, Detector
from .detector import RANDOM_SQUEEZERS, EnsembleDetector
from .gate import DetectorGate
from .lid import LIDDetector
from .perceptual import PIHA
from .persist import load_detector, model_fingerprint
from .registry import DETECTORS as DETECTOR_REGISTRY
from .registry import detector_names, get_detector, register_detector
from .squeeze import (
    XU_CIFAR_SQUEEZERS,
    FeatureSqueezing,
    bit_depth,
    median_smooth,
    nl_means,
    parse_squeezer,
)
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
from .union import UNION_MEMBERS, UnionDetector

__all__ = [
    "DetectorGate",
    "DEFENSES",
    "DETECTOR_REGISTRY",
    "LIDDetector",
    "RANDOM_SQUEEZERS",
    "XU_CIFAR_SQUEEZERS",
    "detector_names",
    "get_detector",
    "load_detector",
    "model_fingerprint",
    "nl_means",
    "register_detector",
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
    "UNION_MEMBERS",
    "UnionDetector",
    "bit_depth",
    "defend",
    "get_defense",
    "make_adaptive",
    "median_smooth",
    "parse_squeezer",
]
