"""White-box IDLS attacks (PGD, ADV^2, AdvEdge, AdvEdge+): invariants over every registered
attack x interpreter pair on a tiny random model, plus the edge metric and the schedules."""

import math

import numpy as np
import pytest
import torch

from conftest import needs_mirror
from idlsec.attacks import ADV2, ATTACKS, AdvEdge, AdvEdgePlus, _idls, make_attack
from idlsec.bench.records import records_from_result
from idlsec.errors import ConfigError, InputError
from idlsec.interpreters import INTERPRETERS, get_interpreter
from idlsec.metrics.edges import edge_energy_ratio, edge_mask, sobel_edges

# every registered white-box attack x every registered interpreter: registering is what puts an
# attack (or an interpreter) under these tests (tests/test_registry_toy.py checks it)
WHITEBOX = sorted(n for n, c in ATTACKS.items() if not c.black_box)
FAST = {"rts": {"weights": "random"}, "mask": {"iterations": 6},
        "smoothgrad": {"n_samples": 2}}  # interpreter settings that keep each pair < 1 s
# budgets that keep each pair < 1 s; an attack not listed gets these where it takes them
FAST_PARAMS = {"pgd": {"steps": 6, "alpha": 2 / 255, "random_start": False}}
GENERIC = {"warmup_steps": 3, "steps": 4, "mask_resolve_every": 2, "mask_inner_steps": 2, "mask_bisection": 4,
           "iterations": 4}
EPS = 8 / 255


def _interp(name, model):
    return get_interpreter(name, model, **FAST.get(name, {}))


def _attack(name, model, interp, **kw):
    cls = ATTACKS[name]
    params = FAST_PARAMS.get(name) or {k: v for k, v in GENERIC.items() if k in cls.param_names()}
    params = {**params, "targeted": True, "eps": EPS, **kw}
    return make_attack(name, model, interp, **params)


@pytest.fixture
def batch(images):
    x, _ = images
    return x, torch.tensor([1, 2, 3, 4])


def test_the_four_white_box_attacks_are_registered():
    assert {"pgd", "adv2", "advedge", "advedge+"} <= set(WHITEBOX)


@pytest.mark.parametrize("interp_name", sorted(INTERPRETERS))
@pytest.mark.parametrize("attack_name", WHITEBOX)
def test_invariants(tiny_model, batch, attack_name, interp_name):
    x, t = batch
    interp = _interp(interp_name, tiny_model)
    try:
        ATTACKS[attack_name].check_interpreter_class(INTERPRETERS[interp_name])
    except ConfigError:  # a combination the attack refuses: it must refuse at construction too
        with pytest.raises(ConfigError):
            _attack(attack_name, tiny_model, interp)
        return
    tiny_model.train()
    res = _attack(attack_name, tiny_model, interp, seed=3).run(x, t)
    assert tiny_model.training  # mode restored
    tiny_model.eval()
    delta = res.x_adv - x
    assert delta.abs().max() <= EPS + 1e-6
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.adv_map.shape == res.benign_map.shape
    assert torch.isfinite(torch.tensor(res.loss_history)).all()
    assert torch.equal(res.success, res.pred == t)
    again = _attack(attack_name, tiny_model, interp, seed=3).run(x, t)
    assert torch.equal(res.x_adv, again.x_adv)  # seeded CPU runs are bit-identical
    if attack_name == "advedge+":  # no perturbation off the edge mask when every step is weighted
        theta = _idls.profile_for(interp).edge_threshold
        off = edge_mask(sobel_edges(x), theta).expand_as(x) == 0
        assert off.any() and (delta[off] == 0).all()


@pytest.mark.parametrize("interp_name", ["cam", "gradcam", "grad", "rts", "mask"])
@pytest.mark.parametrize("attack_name", ["adv2", "advedge"])
def test_loss_decreases_in_both_stages(tiny_model, batch, attack_name, interp_name):
    x, t = batch
    interp = _interp(interp_name, tiny_model)
    warm, steps = 6, 8
    res = _attack(attack_name, tiny_model, interp, warmup_steps=warm, steps=steps, schedule="constant",
                  mask_resolve_every=100, select="last", eps=32 / 255, alpha=2 / 255).run(x, t)
    h = res.loss_history
    assert len(h) == warm + steps
    assert h[warm - 1] < h[0]                           # warm start: the prediction loss
    if interp_name != "mask":  # MASK's joint history is the map distance of a drifting inner solve
        assert np.mean(h[-3:]) < np.mean(h[warm:warm + 3])


def test_mask_hypergradient_lowers_the_unrolled_distance(tiny_model, batch):
    """The bilevel step: moving x against the gradient of the unrolled mask distance lowers it."""
    x, t = batch
    mask = get_interpreter("mask", tiny_model, iterations=2)  # 2 Adam steps from 0.5: no clamped entries
    atk = ADV2(tiny_model, mask, mask_inner_steps=3)
    s = atk._settings()
    target_map = 1 - mask.solve(x, t).m
    state = mask.solve(x + 0.02 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1)), t)
    x0 = x.clone().requires_grad_(True)
    dist, _ = atk._mask_unrolled_distance(x0, t, state, target_map, s)
    (g,) = torch.autograd.grad(dist.sum(), x0)
    assert g.abs().sum() > 0
    with torch.no_grad():
        after, _ = atk._mask_unrolled_distance(x - 1e-3 * _idls.l2_normalize(g), t, state, target_map, s)
    assert (after < dist.detach()).all()


def test_pgd_loss_decreases(tiny_model, batch):
    x, t = batch
    res = _attack("pgd", tiny_model, None).run(x, t)
    assert res.loss_history[-1] < res.loss_history[0]


def test_advedge_soft_weights_and_stages(tiny_model, batch):
    x, t = batch
    cam = _interp("cam", tiny_model)
    # AdvEdge's warm-start steps are alpha * E: no single step moves a pixel by more than alpha * E
    one = AdvEdge(tiny_model, cam, warmup_steps=1, steps=0, select="last").run(x, t)
    limit = (1 / 255) * sobel_edges(x).expand_as(x)
    assert ((one.x_adv - x).abs() <= limit + 1e-7).all()
    # edge_stages="warmup" (the released code) takes plain ADV^2 steps afterwards: off-mask pixels move
    plus = AdvEdgePlus(tiny_model, cam, warmup_steps=2, steps=4, edge_stages="warmup").run(x, t)
    off = edge_mask(sobel_edges(x), 0.1).expand_as(x) == 0
    assert (plus.x_adv - x)[off].abs().max() > 0
    # AdvEdge+ on RTS uses theta = 0.05
    rts = _interp("rts", tiny_model)
    atk = AdvEdgePlus(tiny_model, rts, warmup_steps=2, steps=1)
    assert atk._settings().edge_threshold == 0.05
    released = AdvEdge(tiny_model, rts, losses="released")
    assert released._settings().encoder_weight == 0.2 and AdvEdge(tiny_model, rts)._settings().encoder_weight == 0.1


def test_released_losses_are_seeded(tiny_model, batch):
    x, t = batch
    cam = _interp("cam", tiny_model)
    run = lambda seed: AdvEdge(tiny_model, cam, warmup_steps=2, steps=3, losses="released",
                               seed=seed).run(x, t)
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.x_adv, b.x_adv) and a.loss_history != c.loss_history


def test_given_target_map(tiny_model, batch):
    x, t = batch
    cam = _interp("cam", tiny_model)
    atk = ADV2(tiny_model, cam, warmup_steps=2, steps=3)
    base = atk.run(x, t)
    same = atk.run(x, t, target_map=base.benign_map)
    assert torch.equal(base.x_adv, same.x_adv)
    other = atk.run(x, t, target_map=torch.zeros_like(base.benign_map))
    assert not torch.equal(base.x_adv, other.x_adv)
    with pytest.raises(InputError, match="shape"):
        atk.run(x, t, target_map=torch.zeros(4, 1, 4, 4))
    with pytest.raises(InputError, match="NaN"):
        atk.run(x, t, target_map=torch.full_like(base.benign_map, float("nan")))


def test_best_example_selection(tiny_model, batch):
    x, t = batch
    cam = _interp("cam", tiny_model)
    best = ADV2(tiny_model, cam, warmup_steps=3, steps=5).run(x, t)
    last = ADV2(tiny_model, cam, warmup_steps=3, steps=5, select="last").run(x, t)
    found = best.info["per_sample"]["best_found"].bool()
    assert torch.equal(found, best.success)  # an image succeeds iff a successful example was kept
    assert "best_found" not in last.info["per_sample"]
    # the tracker: keeps the closest successful candidate, never an unsuccessful one
    tr = _idls.BestTracker(torch.zeros(3, 1, 2, 2))
    tr.update(torch.ones(3, 1, 2, 2), torch.tensor([True, False, True]), torch.tensor([0.5, 0.1, 0.3]), 0)
    tr.update(2 * torch.ones(3, 1, 2, 2), torch.tensor([True, True, True]), torch.tensor([0.6, 0.2, 0.1]), 1)
    out = tr.result(torch.full((3, 1, 2, 2), 9.0))
    assert out[:, 0, 0, 0].tolist() == [1.0, 2.0, 2.0] and tr.step.tolist() == [0, 1, 1]


def test_schedules():
    s = _idls.staircase(0.001, 704)
    counts = [int((s == v).sum()) for v in (0.001, 0.004, 0.01, 0.05)]
    assert counts == [301, 201, 101, 101]
    assert len(_idls.staircase(0.001, 70)) == 70
    ramp = _idls.linear_ramp(5.0, 1000)
    assert ramp[0] > 5.0 and ramp[-1] == pytest.approx(10.0)
    with pytest.raises(ConfigError):
        _idls.c_schedule("cubic", 1.0, 3)


def test_losses():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    t = torch.tensor([0, 2])
    assert _idls.cw_margin(logits, t).tolist() == [-2.0, 2.0]
    assert torch.allclose(_idls.smooth_ce(logits, t, 1.0), _idls.ce(logits, t))
    uniform = torch.nn.functional.cross_entropy(logits, torch.full((2, 3), 1 / 3), reduction="none")
    assert torch.allclose(_idls.smooth_ce(logits, t, 1 / 3), uniform)


def test_grad_profile_and_scaling(tiny_model):
    grad = _interp("grad", tiny_model)
    s = ADV2(tiny_model, grad)._settings()
    assert (s.schedule, s.c, s.steps, s.surrogate, s.select_confidence, s.check_every) == \
        ("staircase", 0.001, 704, True, 0.8, 10)
    m = torch.rand(2, 1, 32, 32)
    assert torch.allclose(_idls.map_distance(m, 0 * m, reduction="sum"),
                          m.pow(2).flatten(1).sum(1) * 56 * 56 / 1024)


@pytest.mark.parametrize("cls, kwargs", [
    (ADV2, {"alpha": -1.0}), (ADV2, {"alpha": 2.0}), (ADV2, {"steps": -1}), (ADV2, {"warmup_steps": 1.5}),
    (ADV2, {"c": float("nan")}), (ADV2, {"c": -1.0}), (ADV2, {"schedule": "cubic"}), (ADV2, {"select": "all"}),
    (ADV2, {"select_confidence": 1.5}), (ADV2, {"check_every": 0}), (ADV2, {"encoder_weight": -0.1}),
    (ADV2, {"mask_inner_steps": 0}), (ADV2, {"mask_step": 0.0}), (ADV2, {"mask_bisection": True}),
    (ADV2, {"mask_confidence": 5.0}), (ADV2, {"mask_margin": -1.0}),
    (ADV2, {"targeted": "yes"}), (ADV2, {"eps": 0.0}), (ADV2, {"seed": 1.0}),
    (AdvEdge, {"edge_stages": "stage2"}), (AdvEdge, {"losses": "paper"}), (AdvEdgePlus, {"edge_threshold": -0.1}),
])
def test_bad_hyperparameters_raise(tiny_model, cls, kwargs):
    with pytest.raises(ConfigError):
        cls(tiny_model, _interp("cam", tiny_model), **kwargs)


def test_config_errors(tiny_model, batch):
    with pytest.raises(ConfigError, match="interpreter"):
        ADV2(tiny_model)
    with pytest.raises(ConfigError, match="no parameter"):
        make_attack("advedge", tiny_model, _interp("cam", tiny_model), edge_stage="both")
    with pytest.raises(TypeError):
        ADV2(tiny_model, _interp("cam", tiny_model), 8 / 255)  # hyperparameters are keyword-only
    atk = AdvEdge(tiny_model, _interp("cam", tiny_model))
    with pytest.raises(ConfigError, match="edge_stages"):
        atk.set_params(edge_stages="never")


def test_sobel_matches_skimage_definition():
    from scipy import ndimage as ndi

    x = torch.rand(2, 3, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grey = x.mean(1).numpy()
    for i in range(2):  # skimage.filters.sobel: correlate [1,0,-1] x [1,2,1]/4, reflect, sqrt(sum/2)
        parts = [ndi.correlate1d(ndi.correlate1d(grey[i], [1, 0, -1], axis=a, mode="reflect"),
                                 np.array([1, 2, 1]) / 4, axis=1 - a, mode="reflect") for a in (0, 1)]
        ref = np.sqrt((parts[0] ** 2 + parts[1] ** 2) / 2)
        assert np.allclose(sobel_edges(x)[i, 0].numpy(), ref, atol=1e-12)
    assert sobel_edges(torch.full((1, 3, 5, 5), 0.3)).abs().max() < 1e-7  # flat image: no edges
    with pytest.raises(InputError):
        sobel_edges(torch.rand(3, 8, 8))


def test_edge_energy_ratio():
    edges = torch.zeros(2, 1, 4, 4)
    edges[:, :, 1] = 0.5
    delta = torch.zeros(2, 3, 4, 4)
    delta[0, :, 1] = 0.1            # all on edges
    delta[1, :, 1], delta[1, :, 2] = 0.1, 0.1   # half
    r = edge_energy_ratio(delta, edges, 0.1)
    assert r.tolist() == pytest.approx([1.0, 0.5])
    assert math.isnan(edge_energy_ratio(torch.zeros(1, 3, 4, 4), edges[:1], 0.1)[0])
    with pytest.raises(InputError):
        edge_energy_ratio(delta, edges[:1], 0.1)
    with pytest.raises(InputError):
        edge_energy_ratio(delta, edges, float("nan"))


def test_records_carry_edge_energy_and_ssim(tiny_model, batch):
    x, t = batch
    res = _attack("advedge+", tiny_model, _interp("cam", tiny_model)).run(x, t)
    recs = records_from_result(res, list(range(4)))
    assert all(r["edge_energy_ratio"] == pytest.approx(1.0) for r in recs if r["l2"] > 0)
    assert all(0 < r["ssim_image"] <= 1 for r in recs)
    pgd = records_from_result(_attack("pgd", tiny_model, None).run(x, t), list(range(4)))
    assert all(0 <= r["edge_energy_ratio"] < 1 for r in pgd)


@needs_mirror
@pytest.mark.parametrize("attack", ["adv2", "advedge+"])
def test_cli_attack_on_resnet20(tmp_path, capsys, attack):
    from idlsec.cli import main

    out = tmp_path / attack
    rc = main(["attack", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam",
               "--attack", attack, "--n", "2", "--steps", "3", "--param", "warmup_steps=2", "--out", str(out),
               "--device", "cpu", "--json"])
    assert rc == 0
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 2 and "edge_energy_ratio_mean" in summary and "ssim_image_mean" in summary
    assert summary["config"]["attack"] == attack


@pytest.mark.parametrize("interp_name", ["cam", "grad", "mask"])
def test_untargeted(tiny_model, images, interp_name):
    x, y = images
    res = _attack("advedge+", tiny_model, _interp(interp_name, tiny_model), targeted=False, eps=16 / 255).run(x, y)
    assert (res.x_adv - x).abs().max() <= 16 / 255 + 1e-6
    assert torch.equal(res.success, res.pred != y)
    assert res.loss_history[2] < res.loss_history[0]  # the warm start moves away from y


# --- registry contracts: ADV^2 profiles, AdvEdge's parameters ----------------------------------
def test_an_interpreter_without_an_adv2_profile_is_refused(tiny_model, batch):
    from idlsec.interpreters import Grad

    class Plain(Grad):  # a new interpreter: its own name, no profile
        name = "plain-grad"

    with pytest.raises(ConfigError, match="plain-grad.*adv2_profile"):
        ADV2(tiny_model, Plain(tiny_model))
    with pytest.raises(ConfigError, match="adv2_profile"):
        ADV2.check_interpreter_class(Plain)
    assert _idls.profile_for(Grad) is _idls.PROFILES["grad"]  # the built-ins keep the papers' profiles

    class Borrowing(Grad):
        name = "borrowing-grad"
        adv2_profile = "cam"

    class Own(Grad):
        name = "own-grad"
        adv2_profile = {"c": 0.5, "schedule": "constant"}

    assert _idls.profile_for(Borrowing) == _idls.PROFILES["cam"]
    assert _idls.profile_for(Own) == _idls.Profile(c=0.5, schedule="constant")
    x, t = batch
    res = ADV2(tiny_model, Own(tiny_model), warmup_steps=1, steps=2).run(x, t)
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6

    class Typo(Grad):
        name = "typo-grad"
        adv2_profile = {"stepz": 3}

    with pytest.raises(ConfigError, match="stepz"):
        ADV2(tiny_model, Typo(tiny_model))


def test_advedge_takes_every_adv2_parameter_with_adv2_defaults(tiny_model):
    adv2 = ADV2.param_defaults()
    for cls in (AdvEdge, AdvEdgePlus):
        mine = cls.param_defaults()
        assert {k: mine[k] for k in adv2} == adv2
        assert set(mine) - set(adv2) == {"edge_stages", "edge_threshold", "losses", "edge_fallback",
                                          "edge_fallback_factor"}
    atk = AdvEdge(tiny_model, _interp("cam", tiny_model), alpha=0.5 / 255, mask_margin=3.0, steps=7)
    assert (atk.alpha, atk.mask_margin, atk.steps, atk.warmup_steps) == (0.5 / 255, 3.0, 7, None)
    with pytest.raises(ConfigError, match="stepz"):
        AdvEdge(tiny_model, _interp("cam", tiny_model), stepz=3)


# --- black-box attacks: every registered one, through the one construction path -----------------
BLACKBOX = sorted(n for n, c in ATTACKS.items() if c.black_box)
BLACKBOX_FAST = {"quscore": {"mi_steps": 1, "init_rounds": 1}}


@pytest.mark.parametrize("attack_name", BLACKBOX)
def test_black_box_invariants(tiny_model, batch, attack_name):
    from conftest import make_tiny_resnet
    from idlsec.spec import AttackSpec, build_attack

    x, _ = batch
    with torch.no_grad():
        y = tiny_model(x).argmax(1)
    spec = AttackSpec(model="cifar10-resnet20", attack=attack_name, interpreter="cam", targeted=False,
                      surrogates=("cifar10-resnet32",), max_queries=25, params=BLACKBOX_FAST.get(attack_name, {}))

    def run():
        atk = build_attack(spec, model=tiny_model, loader=lambda name: make_tiny_resnet(seed=1))
        return atk, atk.run(x, y)

    atk, res = run()
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6 and res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    assert res.queries is not None and (res.queries >= 1).all() and (res.queries <= 25).all()
    assert int(res.queries.sum()) == atk.oracle.queries      # exact accounting
    with torch.no_grad():   # success is the victim's verdict on the returned example
        assert torch.equal(res.success, tiny_model(res.x_adv).argmax(1) != y)
    assert torch.equal(run()[1].x_adv, res.x_adv)              # seeded
