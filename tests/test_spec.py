"""AttackSpec and build_attack: strict parsing, checks before any work, and what gets built
(white-box on the defended model; black-box behind an oracle with its budget, defense and the
evaluator's maps)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_resnet
from idlsec.attacks import ADV2, PGD, BlackBox, QuScore
from idlsec.errors import ConfigError
from idlsec.interpreters import CAM, Grad, register_interpreter, unregister_interpreter
from idlsec.spec import AttackSpec, build, build_attack

ZOO = "cifar10-resnet20"  # a name the checks know; every test here injects a tiny model


def test_round_trip_and_strict_keys():
    spec = AttackSpec(
        model=ZOO,
        attack="quscore",
        interpreter="cam",
        surrogates=["cifar10-resnet32"],
        max_queries=50,
        params={"pop_size": 3},
    )
    d = spec.to_dict()
    assert d["surrogates"] == ["cifar10-resnet32"]
    assert AttackSpec.from_dict(d) == spec
    with pytest.raises(ConfigError, match=r"'stepz'.*valid: model, attack, interpreter, params"):
        AttackSpec.from_dict({**d, "stepz": 3})
    assert AttackSpec.from_dict({**d, "stepz": 3}, strict=False) == spec
    with pytest.raises(ConfigError, match="needs model"):
        AttackSpec.from_dict({"attack": "pgd"})


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"attack": "fgsm-9000"}, "unknown attack 'fgsm-9000'; valid: .*pgd"),
        ({"model": "resnet-9000"}, "unknown model"),
        ({"interpreter": "lime"}, "unknown interpreter 'lime'"),
        (
            {"params": {"stepz": 3}},
            r"no parameter\(s\) \['stepz'\]; valid: \['alpha', 'steps', 'random_start', 'compile', 'cuda_graph', 'amp'\]",
        ),
        ({"params": {"eps": 0.1}}, "set eps with the spec's own fields"),
        ({"eps": 0.0}, "eps"),
        ({"seed": 1.5}, "seed"),
        ({"targeted": "yes"}, "targeted"),
        ({"surrogates": ("cifar10-resnet32",)}, "black-box attacks only"),
        ({"max_queries": 100}, "black-box attacks only"),
        ({"defense": "blur"}, "unknown defense 'blur'"),
        ({"defense_params": {"bits": 3}}, "without a defense"),
        ({"defense": "bitdepth", "defense_params": {"bitz": 3}}, "bitz"),
        (
            {"interpreter_params": {"form": "paper"}, "attack": "pgd", "interpreter": None},
            "without an interpreter",
        ),
        ({"attack": "adv2", "interpreter": None}, "attacks an interpreter"),
        ({"attack": "quscore"}, "black-box attack: give surrogate"),
        ({"attack": "quscore", "surrogates": ("fmnist-cnn",)}, "trained on fashion-mnist"),
        ({"model_options": {"colour": 1}}, "unknown model option"),
    ],
)
def test_check_names_the_problem_before_any_work(fields, message):
    spec = AttackSpec(**{"model": ZOO, "attack": "pgd", "interpreter": "cam", **fields})
    with pytest.raises(ConfigError, match=message):
        spec.check()
    with pytest.raises(ConfigError, match=message):  # build checks first: nothing is loaded
        build_attack(spec, model=object())


def test_an_interpreter_without_a_profile_is_refused_by_the_spec():
    class Plain(Grad):
        name = "plain-grad"

    register_interpreter(Plain)
    try:
        AttackSpec(
            model=ZOO, attack="pgd", interpreter="plain-grad"
        ).check()  # PGD needs no profile
        with pytest.raises(ConfigError, match="plain-grad.*adv2_profile"):
            AttackSpec(model=ZOO, attack="advedge", interpreter="plain-grad").check()
    finally:
        unregister_interpreter("plain-grad")


def test_white_box_attack_faces_the_defended_model(tiny_model, images):
    spec = AttackSpec(
        model=ZOO,
        attack="pgd",
        interpreter="cam",
        params={"steps": 2},
        targeted=False,
        defense="bitdepth",
        defense_params={"bits": 3},
    )
    built = build(spec, model=tiny_model)
    assert isinstance(built.attack, PGD) and built.attack.model is built.model is not tiny_model
    assert built.interpreter.model is built.model  # the interpreter explains the defended system
    x, _ = images
    assert torch.equal(built.model(x), tiny_model(torch.round(x * 7) / 7))
    plain = build_attack(AttackSpec(model=ZOO, attack="pgd", interpreter="cam"), model=tiny_model)
    assert plain.model is tiny_model and isinstance(plain.interpreter, CAM)
    assert (plain.eps, plain.targeted, plain.seed) == (8 / 255, True, 0)


def test_black_box_attack_gets_an_oracle_budget_defense_and_evaluator(tiny_model, images):
    loaded = []

    def loader(name):
        loaded.append(name)
        return make_tiny_resnet(seed=1)

    spec = AttackSpec(
        model=ZOO,
        attack="quscore",
        interpreter="cam",
        surrogates=("cifar10-resnet32",),
        max_queries=30,
        defense="median",
        targeted=False,
        params={"mi_steps": 1, "init_rounds": 1},
    )
    atk = build_attack(spec, model=tiny_model, loader=loader)
    assert isinstance(atk, QuScore) and isinstance(atk.oracle, BlackBox) and atk.interpreter is None
    assert loaded == ["cifar10-resnet32"] and len(atk.surrogates) == 1
    assert (
        atk.oracle.max_queries == 30 == atk.max_queries
        and atk.oracle.defended
        and atk.oracle.exposes_maps
    )
    x, y = images
    with torch.no_grad():
        y = tiny_model(x).argmax(1)
    res = atk.run(x, y)
    assert (res.queries <= 30).all() and (res.queries >= 1).all()
    assert (res.x_adv - x).abs().max() <= 8 / 255 + 1e-6
    cam = CAM(tiny_model)  # the evaluator's view: the target's maps on the undefended model
    assert torch.allclose(res.benign_map, cam(x)) and torch.allclose(res.adv_map, cam(res.x_adv))


def test_without_max_queries_the_oracle_enforces_the_attacks_own_budget(tiny_model):
    spec = AttackSpec(
        model=ZOO,
        attack="quscore",
        interpreter="cam",
        surrogates=("cifar10-resnet32",),
        params={"max_queries": 40},
    )
    atk = build_attack(spec, model=tiny_model, loader=lambda name: make_tiny_resnet(seed=1))
    assert atk.oracle.max_queries == 40 == atk.max_queries
    spec = AttackSpec(
        model=ZOO,
        attack="quscore",
        interpreter="cam",
        surrogates=("cifar10-resnet32",),
        params={"max_queries": 40},
        max_queries=50,
    )
    with pytest.raises(ConfigError, match="max_queries given twice"):
        spec.check()


def test_adv2_defaults_come_from_the_class(tiny_model):
    atk = build_attack(
        AttackSpec(model=ZOO, attack="adv2", interpreter="grad", params={"steps": 3}),
        model=tiny_model,
    )
    assert isinstance(atk, ADV2) and atk.steps == 3 and atk.alpha == 1 / 255 and atk.targeted
