"""ADV^2 / AdvEdge / AdvEdge+ in the PGD, C&W and StAdv frameworks (ALGORITHMS.md §4.4), the flow
metrics, and AdvEdge+'s edge fallback."""

import json
import math

import pytest
import torch

from conftest import needs_mirror
from idlsec.attacks import ADV2, make_attack
from idlsec.attacks.frameworks import FRAMEWORKS, warp
from idlsec.bench.records import records_from_result
from idlsec.errors import ConfigError, InputError
from idlsec.interpreters import get_interpreter
from idlsec.metrics.edges import edge_mask, sobel_edges
from idlsec.metrics.flow import FLOW_EPS, flow_magnitude, flow_smoothness

ATTACKS = ("adv2", "advedge", "advedge+")
EPS = 8 / 255


@pytest.fixture(scope="module")
def cifar_batch(resnet20, cifar_test):
    from idlsec.data import select_images

    sel = select_images(cifar_test, 4, seed=0, model=resnet20, correct_only=True)
    return sel.x, sel.targets


@needs_mirror
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("attack", ATTACKS)
def test_asr_and_bounds_on_resnet20(resnet20, cifar_batch, attack, framework):
    x, t = cifar_batch
    atk = make_attack(attack, resnet20, get_interpreter("cam", resnet20), framework=framework, targeted=True,
                      warmup_steps=10, steps=20, eps=EPS)
    res = atk.run(x, t)
    assert res.success.float().mean() >= 0.75, res.success
    delta = res.x_adv - x
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    if framework == "pgd":
        assert delta.abs().max() <= EPS + 1e-6
    if attack == "advedge+":  # the hard mask holds in every framework (PGD: steps; C&W/StAdv: the delta)
        off = edge_mask(sobel_edges(x), 0.1).expand_as(x) == 0
        assert off.any() and (delta[off] == 0).all()
    if framework == "stadv":
        per = res.info["per_sample"]
        assert {"flow_mean", "flow_max", "flow_smoothness"} <= set(per)
        assert (per["flow_max"] >= per["flow_mean"]).all() and (per["flow_mean"] > 0).all()


def test_cw_and_stadv_are_not_eps_bounded_but_stay_in_the_box(tiny_model, images):
    """The authors' C&W and StAdv code has no L∞ projection: eps is ignored, [0, 1] holds."""
    x, _ = images
    t = torch.tensor([1, 2, 3, 4])
    interp = get_interpreter("cam", tiny_model)
    for fw in ("cw", "stadv"):
        res = ADV2(tiny_model, interp, framework=fw, eps=1 / 255, warmup_steps=5, steps=5, lr=0.1).run(x, t)
        assert (res.x_adv - x).abs().max() > 1 / 255  # not clipped, and run() accepts it
        assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_seeded_determinism(tiny_model, images, framework):
    x, _ = images
    t = torch.tensor([1, 2, 3, 4])
    interp = get_interpreter("gradcam", tiny_model)
    run = lambda seed: make_attack("advedge", tiny_model, interp, framework=framework, warmup_steps=3,  # noqa: E731
                                   steps=4, seed=seed).run(x, t).x_adv
    a, b = run(1), run(1)
    assert torch.equal(a, b)
    if framework == "stadv":  # the random flow initialisation follows the seed
        assert not torch.equal(a, run(2))


def test_framework_defaults_and_validation(tiny_model):
    interp = get_interpreter("cam", tiny_model)
    assert ADV2(tiny_model, interp)._settings().steps == 1000
    assert (ADV2(tiny_model, interp, framework="cw")._settings().warmup_steps,
            ADV2(tiny_model, interp, framework="cw")._settings().steps) == (300, 1500)
    s = ADV2(tiny_model, interp, framework="stadv", steps=7)._settings()
    assert (s.warmup_steps, s.steps) == (200, 7)
    for bad in ({"framework": "fgsm"}, {"lr": 0}, {"cw_kappa": -1}, {"stadv_tau": float("nan")},
                {"cw_warmup_weight": "a"}):
        with pytest.raises(ConfigError):
            ADV2(tiny_model, interp, **bad)
    with pytest.raises(ConfigError, match="MASK"):
        ADV2(tiny_model, get_interpreter("mask", tiny_model, iterations=2), framework="cw")


def test_warp_identity_and_shift():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(warp(x, torch.zeros(2, 2, 8, 8)), x, atol=1e-6)
    flow = torch.zeros(2, 2, 8, 8)
    flow[:, 0] = 1.0  # sample one pixel to the right
    assert torch.allclose(warp(x, flow)[..., :-1], x[..., 1:], atol=1e-6)


def test_flow_metrics_on_a_constant_field():
    h, w = 5, 7
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0], flow[:, 1] = 3.0, 4.0
    assert torch.allclose(flow_magnitude(flow), torch.full((1, h, w), 5.0))
    border = 2 * h + 2 * w  # neighbour pairs that leave the (zero-padded) image
    expected = (4 * h * w - border) * math.sqrt(FLOW_EPS) + border * math.sqrt(25 + FLOW_EPS)
    assert flow_smoothness(flow).item() == pytest.approx(expected, rel=1e-5)
    rough = flow.clone()
    rough[:, 0, 2, 3] += 1.0
    assert flow_smoothness(rough) > flow_smoothness(flow)
    with pytest.raises(InputError):
        flow_smoothness(torch.zeros(1, 3, 4, 4))


def test_stadv_records_carry_flow_and_norms(tiny_model, images):
    x, _ = images
    t = torch.tensor([1, 2, 3, 4])
    res = ADV2(tiny_model, get_interpreter("cam", tiny_model), framework="stadv", warmup_steps=2,
               steps=3).run(x, t)
    recs = records_from_result(res, range(4))
    assert all({"l2", "linf", "flow_mean", "flow_max", "flow_smoothness"} <= set(r) for r in recs)


@needs_mirror
def test_edge_fallback_flips_a_forced_hard_case(resnet20, cifar_batch):
    """θ = 0.7 leaves (almost) no pixel in AdvEdge+'s mask, so the first pass cannot flip any image;
    the fallback round (θ·0.1 = 0.07) does, and records what it used."""
    x, t = cifar_batch
    interp = get_interpreter("cam", resnet20)
    kw = dict(framework="pgd", targeted=True, warmup_steps=10, steps=10, edge_threshold=0.7)
    res = make_attack("advedge+", resnet20, interp, edge_fallback=1, edge_fallback_factor=0.1, **kw).run(x, t)
    per = res.info["per_sample"]
    assert (per["first_pass_success"] == 0).all()
    assert res.success.float().mean() >= 0.75
    used = per["edge_threshold_used"]
    assert torch.allclose(used[res.success], torch.tensor(0.07)) and (used[~res.success] == 0.7).all()
    off = (sobel_edges(x) <= used.view(-1, 1, 1, 1)).expand_as(x)  # each image within its own mask
    assert ((res.x_adv - x)[off] == 0).all()
    plain = make_attack("advedge+", resnet20, interp, **kw).run(x, t)
    assert plain.success.float().mean() == 0 and "first_pass_success" not in plain.info["per_sample"]
    with pytest.raises(ConfigError, match="edge_fallback"):
        make_attack("advedge", resnet20, interp, edge_fallback=1)


@needs_mirror
def test_cli_framework_param(tmp_path):
    from idlsec.cli import main

    out = tmp_path / "stadv"
    rc = main(["attack", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam",
               "--attack", "advedge+", "--n", "2", "--steps", "2", "--param", "warmup_steps=2",
               "--param", "framework=stadv", "--out", str(out), "--device", "cpu", "--json"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["params"]["framework"] == "stadv"
    assert {"flow_mean", "flow_max_mean", "flow_smoothness_mean", "l2_mean"} <= set(summary)
