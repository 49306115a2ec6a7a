"""Every keyword hyperparameter of every registered attack is described in
``idlsec.attacks.params`` (a new parameter must be described), and each description agrees with
the attack's default: its type, range and choices."""

from __future__ import annotations

import math

import pytest

from idlsec.attacks import ATTACKS, register_attack, unregister_attack
from idlsec.attacks.base import Attack
from idlsec.attacks.params import (
    NOT_HYPERPARAMETERS,
    PARAM_META,
    PIXEL,
    ParamMeta,
    param_info,
    undescribed,
)


def test_every_registered_keyword_is_described():
    assert undescribed() == {}, "describe these parameters in src/idlsec/attacks/params.py"


def test_an_undescribed_keyword_is_caught_and_typed_from_its_default():
    class Toy(Attack):
        name = "toy-undescribed"
        param_meta = {"gamma": ParamMeta("float", "a described one", min=0.0)}

        def __init__(self, model, interpreter=None, *, eps=8 / 255, warp_factor=3, gamma=0.5, table=None,
                     targeted=False, seed=0, progress=False, callback=None):
            super().__init__(model, interpreter, eps=eps, targeted=targeted, seed=seed)

    register_attack(Toy)
    try:
        assert undescribed()["toy-undescribed"] == ["warp_factor", "table"]
        info = {p["name"]: p for p in param_info("toy-undescribed")}
        assert "table" not in info  # a None default says nothing: left out
        assert (info["warp_factor"]["kind"], info["warp_factor"]["help"]) == ("int", "")
        assert (info["gamma"]["help"], info["gamma"]["min"]) == ("a described one", 0.0)
    finally:
        unregister_attack("toy-undescribed")


def _in_range(p: dict, v) -> bool:
    lo, hi = p["min"], p["max"]
    if lo is not None and (v < lo or (p["min_exclusive"] and v == lo)):
        return False
    return not (hi is not None and (v > hi or (p["max_exclusive"] and v == hi)))


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_descriptions_agree_with_defaults(attack):
    info = param_info(attack)
    names = [p["name"] for p in info]
    assert names == [n for n in ATTACKS[attack].param_names() if n not in NOT_HYPERPARAMETERS]
    for p in info:
        v, where = p["default"], f"{attack}.{p['name']}"
        assert p["help"] and "\n" not in p["help"] and len(p["help"]) <= 120, where
        assert "§" not in p["help"] and ".md" not in p["help"], f"{where}: no raw doc references in help"
        if p["min"] is not None and p["max"] is not None:
            assert p["min"] <= p["max"], where
        if v is None:
            assert p["nullable"] and p["none_means"], f"{where}: default None needs nullable and none_means"
            continue
        kind = p["kind"]
        if kind == "bool":
            assert isinstance(v, bool), where
        elif kind == "int":
            assert isinstance(v, int) and not isinstance(v, bool), where
            assert _in_range(p, v), f"{where}: default {v} outside [{p['min']}, {p['max']}]"
        elif kind == "float":
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), where
            assert _in_range(p, v), f"{where}: default {v} outside [{p['min']}, {p['max']}]"
        elif kind == "choice":
            assert p["choices"], where
            assert v in p["choices"], f"{where}: default {v!r} not among {p['choices']}"
        else:
            assert kind == "string" and isinstance(v, str), where
        if kind != "choice":
            assert p["choices"] is None, where


def test_pixel_budgets_share_one_unit():
    for attack in ATTACKS:
        for p in param_info(attack):
            if p["name"] in ("eps", "alpha", "mi_step"):
                assert p["unit"] == PIXEL and p["kind"] == "float" and p["max"] == 1.0, (attack, p["name"])


def test_overrides_follow_the_class_hierarchy():
    steps = {a: next(p for p in param_info(a) if p["name"] == "steps") for a in ("pgd", "adv2", "advedge+")}
    assert steps["pgd"]["default"] == 10 and not steps["pgd"]["nullable"]
    assert steps["adv2"]["nullable"] and steps["advedge+"]["help"] == steps["adv2"]["help"]
    assert steps["adv2"]["help"] != steps["pgd"]["help"]
    sq = next(p for p in param_info("square") if p["name"] == "max_queries")
    qs = next(p for p in param_info("quscore") if p["name"] == "max_queries")
    assert (sq["min"], qs["min"]) == (3, 1)


def test_quscore_folds_its_options():
    info = param_info("quscore")
    shown = [p["name"] for p in info if not p["advanced"]]
    assert len(info) > 30 and len(shown) <= 6, shown
    si = next(p for p in info if p["name"] == "surrogate_interpreter")
    assert "grad" in si["choices"] and si["default"] in si["choices"]


def test_metadata_has_no_orphans():
    used = {n for cls in ATTACKS.values() for n in cls.param_names()}
    assert set(PARAM_META) <= used | NOT_HYPERPARAMETERS, set(PARAM_META) - used
