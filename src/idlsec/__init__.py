"""idlsec: attacks and defenses for interpretable deep learning systems (a classifier coupled with an
interpreter). Images are float (N, C, H, W) in [0, 1]; normalisation lives inside the model.

    import idlsec
    model = idlsec.load_model("cifar10-resnet20")
    cam = idlsec.interpreters.CAM(model)
    atk = idlsec.attacks.PGD(model, cam, eps=8/255, targeted=True)
    res = atk.run(x, targets)
    # or from names, the way the CLI, suites and the lab build every attack:
    atk = idlsec.build_attack(idlsec.AttackSpec(model="cifar10-resnet20", interpreter="cam", attack="adv2"))
"""

from __future__ import annotations

from . import attacks, data, interpreters, metrics, models
from .data import load_dataset, select_images
from .errors import (
    ChecksumError,
    ConfigError,
    IdlsecError,
    InputError,
    QueryBudgetExceeded,
    ResourceError,
)
from .models import load_model
from .spec import AttackSpec, build_attack

__version__ = "0.1.0"


def registry_info() -> dict:
    """Everything registered, by kind (what ``idlsec info --json`` prints)."""
    from .defenses.registry import detector_names
    from .spec import MONITORS

    return {"models": models.model_names(), "datasets": sorted(data.DATASETS) + ["folder:<path>"],
            "interpreters": sorted(interpreters.INTERPRETERS), "attacks": sorted(attacks.ATTACKS),
            "detectors": detector_names(), "monitors": sorted(MONITORS)}


__all__ = ["AttackSpec", "ChecksumError", "ConfigError", "IdlsecError", "InputError", "QueryBudgetExceeded", "ResourceError",
           "attacks", "data", "interpreters", "load_dataset", "load_model", "metrics", "models",
           "build_attack", "registry_info", "select_images"]
