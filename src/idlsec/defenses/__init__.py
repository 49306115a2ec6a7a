"""Defenses: input transforms, detectors (feature squeezing, ensemble of interpreters)."""

from .base import DetectionReport, Detector
from .detector import EnsembleDetector
from .squeeze import FeatureSqueezing, bit_depth, median_smooth, parse_squeezer
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
    "BitDepthReduction",
    "DefendedModel",
    "DetectionReport",
    "Detector",
    "EnsembleDetector",
    "FeatureSqueezing",
    "InputTransform",
    "JPEGCompression",
    "MedianFilter",
    "RandomResizePad",
    "bit_depth",
    "defend",
    "get_defense",
    "median_smooth",
    "parse_squeezer",
]
