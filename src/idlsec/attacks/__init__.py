"""Attacks: ``atk = Attack(model, interpreter, **params); x_adv = atk(x, y); res = atk.run(x, y)``."""

from __future__ import annotations

from ..errors import ConfigError, unknown_name
from .adv2 import ADV2
from .advedge import AdvEdge, AdvEdgePlus
from .base import Attack, AttackResult, project_linf
from .oracle import BlackBox, BlackBoxAttack
from .pgd import PGD
from .quscore import QuScore
from .singleadv import SingleADV
from .square import Square

ATTACKS: dict[str, type[Attack]] = {"pgd": PGD, "adv2": ADV2, "advedge": AdvEdge, "advedge+": AdvEdgePlus,
                                   "quscore": QuScore, "square": Square}


def register_attack(cls: type[Attack]) -> type[Attack]:
    ATTACKS[cls.name] = cls
    return cls


def attack_class(name: str, params=()) -> type[Attack]:
    """The registered class for ``name``, after checking that it accepts every name in ``params``."""
    if name not in ATTACKS:
        raise unknown_name("attack", name, ATTACKS)
    cls = ATTACKS[name]
    unknown = set(params) - set(cls.param_names())
    if unknown:
        raise ConfigError(f"attack {name!r} has no parameter(s) {sorted(unknown)}; valid: {cls.param_names()}")
    return cls


def make_attack(name: str, model, interpreter=None, **params) -> Attack:
    """Build a registered attack by name; unknown parameters are an error that lists valid ones."""
    return attack_class(name, params)(model, interpreter, **params)


__all__ = ["ADV2", "ATTACKS", "AdvEdge", "AdvEdgePlus", "Attack", "AttackResult", "BlackBox", "BlackBoxAttack",
           "PGD", "QuScore", "SingleADV", "Square", "attack_class", "make_attack",
           "project_linf", "register_attack"]
