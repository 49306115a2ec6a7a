"""QuScore: seeded and reproducible, exact query accounting, every candidate in the eps-ball."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import make_tiny_resnet, needs_mirror
from idlsec.attacks import BlackBox, QuScore, make_attack
from idlsec.errors import ConfigError
from idlsec.interpreters import CAM

EPS = 8 / 255


class Recorder(nn.Module):
    """The victim as the oracle sees it; keeps every row it is asked to classify (the oracle's
    classification pass runs under no_grad; the interpreter's own pass for the map does not)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.card, self.seen = model, model.card, []

    def forward(self, x):
        if not torch.is_grad_enabled():
            self.seen.append(x.detach().clone())
        return self.model(x)


@pytest.fixture
def setup(images):
    x, y = images
    target = make_tiny_resnet(0)
    with torch.no_grad():
        y = target(x).argmax(1)                     # "correctly classified" by construction
    return x, y, target, make_tiny_resnet(1)


def _attack(target, surrogate, *, budget=60, maps=False, **kw):
    net = target.model.net if isinstance(target, Recorder) else target.net
    interp = CAM(target, target_layer=net.layer3, fc_layer=net.linear) if maps else None
    oracle = BlackBox(target, interpreter=interp, max_queries=budget)
    params = {"surrogates": [surrogate], "surrogate_interpreter": "cam", "mi_steps": 3, "seed": 0}
    params.update(kw)
    return QuScore(oracle, **params), oracle


def test_exact_accounting_and_bounds(setup):
    x, y, target, surrogate = setup
    rec = Recorder(target)
    atk, oracle = _attack(rec, surrogate, budget=40, maps=True, fitness="score+map", stealth_iou=0.99)
    res = atk.run(x, y)
    seen = torch.cat(rec.seen)
    # the victim saw exactly the queries the result reports, image by image
    assert int(res.queries.sum()) == oracle.queries == len(seen)
    assert torch.equal(res.queries.long(), oracle.queries_per_image(torch.arange(4)))
    assert int(res.queries.max()) <= 40
    # every candidate ever queried lies in the eps-ball of one of the benign images and in [0, 1]
    dist = (seen.unsqueeze(1) - x.unsqueeze(0)).flatten(2).abs().amax(2).min(1).values
    assert float(dist.max()) <= EPS + 1e-6
    assert seen.min() >= 0 and seen.max() <= 1
    assert (res.x_adv - x).abs().max() <= EPS + 1e-6


def test_seeded_and_reproducible(setup):
    x, y, target, surrogate = setup
    a = _attack(target, surrogate, budget=30, diversity=0.5)[0].run(x, y)
    b = _attack(target, surrogate, budget=30, diversity=0.5)[0].run(x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert torch.equal(a.success, b.success)
    c = _attack(target, surrogate, budget=30, diversity=0.5, seed=1)[0].run(x, y)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_stops_at_first_success(setup):
    x, y, target, _ = setup
    # the surrogate is the target itself: the transfer population already fools it, so the
    # attack spends exactly the pop_size queries of the initial evaluation
    atk, _oracle = _attack(target, target, budget=100, encoding="vertex", mi_steps=10)
    res = atk.run(x, y)
    transfer = res.info["per_sample"]["transfer_success"].bool()
    assert int(transfer.sum()) >= 3
    assert bool(res.success[transfer].all())
    assert res.queries[transfer].tolist() == [5.0] * int(transfer.sum())
    assert torch.equal(res.info["queries_to_fool"][res.success], res.queries[res.success])
    assert bool((res.queries[~transfer] > 5).all())
    with torch.no_grad():
        assert torch.equal(target(res.x_adv).argmax(1), res.pred)   # the reported prediction is real


def test_budget_is_respected_without_error(setup):
    x, y, target, surrogate = setup
    atk, _oracle = _attack(target, surrogate, budget=8, targeted=True)
    tgt = (y + 1) % 10
    res = atk.run(x, tgt)                             # hard: targeted, tiny budget; must not raise
    assert int(res.queries.max()) <= 8
    assert torch.equal(res.success, res.pred == tgt)


def test_make_attack_and_bad_config(setup):
    _x, _y, target, surrogate = setup
    oracle = BlackBox(target)
    assert isinstance(make_attack("quscore", oracle, surrogates=[surrogate]), QuScore)
    with pytest.raises(ConfigError, match="BlackBox oracle"):
        QuScore(target, surrogates=[surrogate])
    with pytest.raises(ConfigError, match="surrogates"):
        QuScore(oracle)
    with pytest.raises(ConfigError, match="labels"):
        QuScore(BlackBox(target, output="label"), surrogates=[surrogate])
    with pytest.raises(ConfigError, match="exposes maps"):
        QuScore(oracle, surrogates=[surrogate], fitness="score+map")
    with pytest.raises(ConfigError, match="pop_size"):
        QuScore(oracle, surrogates=[surrogate], pop_size=1)
    with pytest.raises(ConfigError, match="cross_rate"):
        QuScore(oracle, surrogates=[surrogate], cross_rate=1.5)
    with pytest.raises(ConfigError, match="diversity"):
        QuScore(oracle, surrogates=[surrogate], diversity=2)
    with pytest.raises(ConfigError, match="map_term"):
        QuScore(oracle, surrogates=[surrogate], map_term="cos")
    with pytest.raises(ConfigError, match="encoding"):
        QuScore(oracle, surrogates=[surrogate], encoding="gray")
    with pytest.raises(ConfigError, match="interpreter"):
        QuScore(oracle, CAM(target), surrogates=[surrogate])


@needs_mirror
def test_attack_job_summary(tmp_path):
    from idlsec.bench.job import AttackJob, run_attack_job

    job = AttackJob(model="cifar10-resnet20", dataset="cifar10", interpreter="cam", attack="quscore", n=2,
                    targeted=False, surrogate=["cifar10-resnet20"], max_queries=20, device="cpu",
                    params={"mi_steps": 2, "surrogate_interpreter": "cam"})
    out = run_attack_job(job, tmp_path, progress=False)
    s = out["summary"]
    for key in ("queries_mean", "queries_median", "asr_at_budget", "transfer_asr", "iou_topk_mean"):
        assert key in s
    assert set(s["asr_at_budget"]) == {"100", "1000", "10000"}
    assert 0 <= s["transfer_asr"] <= 1 and (tmp_path / "summary.json").is_file()
    with pytest.raises(ConfigError, match="surrogate"):
        run_attack_job(AttackJob(model="cifar10-resnet20", dataset="cifar10", interpreter="cam",
                                 attack="quscore", n=1, device="cpu"))
    with pytest.raises(ConfigError, match="black-box"):
        run_attack_job(AttackJob(model="cifar10-resnet20", dataset="cifar10", interpreter="cam",
                                 attack="pgd", n=1, device="cpu", max_queries=5))


def test_presets_and_overrides(setup):
    _x, _y, target, surrogate = setup
    oracle = BlackBox(target)
    atk = QuScore(oracle, surrogates=[surrogate])
    assert (atk.preset, atk.mutation, atk.fitness, atk.encoding, atk.refine) == \
        ("idlsec", "square", "margin", "vertex", False)
    rel = QuScore(oracle, surrogates=[surrogate], preset="released")
    assert (rel.mutation, rel.fitness, rel.encoding, rel.refine, rel.diversity) == \
        ("bit", "score", "vertex", True, 0.0)
    # an explicit value wins over the preset's
    assert QuScore(oracle, surrogates=[surrogate], preset="released", mutation="square").mutation == "square"
    atk.set_params(preset="released", fitness="margin")
    assert (atk.preset, atk.mutation, atk.fitness) == ("released", "bit", "margin")
    with pytest.raises(ConfigError, match="preset"):
        QuScore(oracle, surrogates=[surrogate], preset="paper")
    for bad in ({"mutation": "gauss"}, {"square_p": 0}, {"refine": "yes"}, {"sgm": 0},
                {"stealth_queries": -1}, {"fitness": "ce"}, {"square_queries": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            QuScore(oracle, surrogates=[surrogate], **bad)


@pytest.mark.parametrize("preset", ["released", "idlsec"])
def test_accounting_and_bounds_per_preset(setup, preset):
    x, y, target, surrogate = setup
    rec = Recorder(target)
    atk, oracle = _attack(rec, surrogate, budget=25, preset=preset, encoding="masked")
    res = atk.run(x, y)
    seen = torch.cat(rec.seen)
    assert int(res.queries.sum()) == oracle.queries == len(seen)
    assert torch.equal(res.queries.long(), oracle.queries_per_image(torch.arange(4)))
    dist = (seen.unsqueeze(1) - x.unsqueeze(0)).flatten(2).abs().amax(2).min(1).values
    assert float(dist.max()) <= EPS + 1e-6 and seen.min() >= 0 and seen.max() <= 1


def test_square_mutation_sets_one_window():
    oracle = BlackBox(make_tiny_resnet(0))
    atk = QuScore(oracle, surrogates=[make_tiny_resnet(1)], square_p=0.25, max_queries=10_000)
    atk._shape = (3, 32, 32)
    genes = torch.zeros(6, 3 * 32 * 32, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    spent = torch.tensor([0, 0, 0, 30, 30, 30])    # 30 queries of a 1,000-query schedule: p halved 3 times
    out, window = atk._square_mutation(genes, spent, gen)
    sides = window.flatten(1).sum(1).float().sqrt()
    assert sides[:3].tolist() == [16.0] * 3 and sides[3:].tolist() == [6.0] * 3   # sqrt(p 32 32)
    changed = out.view(6, 3, 32, 32) != genes.view(6, 3, 32, 32)
    assert not bool((changed & ~window).any())               # nothing outside the window moves
    # within the window, each channel carries one sign
    vals = out.view(6, 3, 32, 32).float()
    w = window.expand(-1, 3, -1, -1)
    hi = vals.masked_fill(~w, -1).amax((2, 3))
    lo = vals.masked_fill(~w, 2).amin((2, 3))
    assert torch.equal(hi, lo)


def test_sgm_scales_residual_gradients_and_releases_hooks():
    from contextlib import ExitStack

    from idlsec.attacks.quscore import _skip_gradient

    net = make_tiny_resnet(1)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    (g0,) = torch.autograd.grad(net(x).sum(), x)
    with ExitStack() as stack:
        _skip_gradient(stack, [net], 0.5)
        out = net(x)
        (g1,) = torch.autograd.grad(out.sum(), x)
    assert torch.allclose(out, net(x))                       # the forward is unchanged
    assert not torch.allclose(g0, g1)
    assert all(not m._forward_hooks for m in net.modules())  # hooks released
    (g2,) = torch.autograd.grad(net(x).sum(), x)
    assert torch.equal(g0, g2)


def test_stealth_queries_caps_the_map_search(setup):
    x, y, target, surrogate = setup
    atk, _oracle = _attack(target, target, budget=200, maps=True, fitness="score+map", stealth_iou=1.0,
                           stealth_queries=7, mi_steps=10)
    res = atk.run(x, y)
    fooled = res.success
    assert bool(fooled.any())
    # past the first fooling query: at most stealth_queries more (+1 for the pair of a generation)
    extra = res.queries[fooled] - res.info["queries_to_fool"][fooled]
    assert bool((extra <= 8).all()) and bool((extra >= 7).all())


def _oracle_iou(res):
    from idlsec.attacks.quscore import _mean_topk_iou

    return _mean_topk_iou(res.info["oracle_adv_map"], res.info["oracle_benign_map"])


def test_prune_search_accounting_bounds_and_seed(setup):
    x, y, target, surrogate = setup
    rec = Recorder(target)
    kw = {"budget": 60, "maps": True, "fitness": "score+map", "stealth_iou": 1.0, "stealth_queries": 25,
          "stealth_search": "prune", "mi_steps": 10}
    atk, oracle = _attack(rec, target, **kw)
    res = atk.run(x, y)
    seen = torch.cat(rec.seen)
    assert int(res.queries.sum()) == oracle.queries == len(seen)
    assert torch.equal(res.queries.long(), oracle.queries_per_image(torch.arange(4)))
    dist = (seen.unsqueeze(1) - x.unsqueeze(0)).flatten(2).abs().amax(2).min(1).values
    assert float(dist.max()) <= EPS + 1e-6 and seen.min() >= 0 and seen.max() <= 1
    fooled = res.success
    assert bool(fooled.any())
    # one pruning query per image and step: exactly stealth_queries after the first fooling query
    extra = res.queries[fooled] - res.info["queries_to_fool"][fooled]
    assert extra.tolist() == [25.0] * int(fooled.sum())
    # the prune stage never gives up the fooling or the map: IoU >= the first fooling member's, and
    # the perturbation only shrinks (pixels of the returned example equal to the benign image)
    first = _attack(target, target, **{**kw, "stealth_queries": 0})[0].run(x, y)
    assert torch.equal(first.success, fooled)
    assert bool((_oracle_iou(res)[fooled] >= _oracle_iou(first)[fooled]).all())
    kept = (res.x_adv != x).flatten(1).sum(1)[fooled]
    assert bool((kept <= (first.x_adv != x).flatten(1).sum(1)[fooled]).all()) and bool((kept < 3 * 32 * 32).all())
    again = _attack(target, target, **kw)[0].run(x, y)
    assert torch.equal(again.x_adv, res.x_adv) and torch.equal(again.queries, res.queries)


def test_prune_search_validation(setup):
    _x, _y, target, surrogate = setup
    interp = CAM(target, target_layer=target.net.layer3, fc_layer=target.net.linear)
    oracle = BlackBox(target, interpreter=interp)
    for bad in ({"stealth_search": "anneal"}, {"prune_p": 0}, {"prune_p": 1.5}, {"prune_patience": 0},
                {"prune_start": -1}, {"prune_scale": 1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            QuScore(oracle, surrogates=[surrogate], stealth_iou=0.8, **bad)
    with pytest.raises(ConfigError, match="stealth_iou"):
        QuScore(oracle, surrogates=[surrogate], stealth_search="prune")
