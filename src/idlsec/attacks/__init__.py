"""Attacks: ``atk = Attack(model, interpreter, **params); x_adv = atk(x, y); res = atk.run(x, y)``.

Every attack is registered with ``@register_attack`` (:mod:`.registry`); :func:`idlsec.spec.build_attack`
builds one from an :class:`~idlsec.spec.AttackSpec`."""

from __future__ import annotations

from .adv2 import ADV2
from .advedge import AdvEdge, AdvEdgePlus
from .base import Attack, AttackResult, project_linf
from .oracle import BlackBox, BlackBoxAttack
from .pgd import PGD
from .quscore import QuScore
from .registry import ATTACKS, attack_class, register_attack, unregister_attack
from .singleadv import SingleADV
from .square import Square

register_attack(QuScore)   # quscore.py is kept free of registry imports; the others use the decorator


def make_attack(name: str, model, interpreter=None, **params) -> Attack:
    """Build a registered attack by name around a model (or oracle) you already hold; unknown
    parameters are an error that lists valid ones. From names and options, use
    :func:`idlsec.spec.build_attack`."""
    return attack_class(name, params)(model, interpreter, **params)


__all__ = ["ADV2", "ATTACKS", "AdvEdge", "AdvEdgePlus", "Attack", "AttackResult", "BlackBox", "BlackBoxAttack",
           "PGD", "QuScore", "SingleADV", "Square", "attack_class", "make_attack",
           "project_linf", "register_attack", "unregister_attack"]
