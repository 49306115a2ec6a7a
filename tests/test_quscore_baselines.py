"""Square from the transfer example (exact accounting, the start it queries) and QuScore's
map-aware options (map_keepout, prune_focus, prune_tol): effect on toy cases, validation."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_resnet
from idlsec.attacks import BlackBox, QuScore, Square
from idlsec.attacks.quscore import _Population
from idlsec.attacks.transfer import transfer_example
from idlsec.errors import ConfigError
from idlsec.interpreters import CAM
from test_quscore import Recorder

EPS = 8 / 255


def assert_charged_and_in_ball(rec, oracle, res, x, budget):
    """Every row the victim classified is a query charged to its image (the surrogate costs none),
    no image over its budget, and every query inside the eps ball and [0, 1]."""
    seen = torch.cat(rec.seen)
    assert int(res.queries.sum()) == oracle.queries == len(seen) and int(res.queries.max()) <= budget
    dist = (seen.unsqueeze(1) - x.unsqueeze(0)).flatten(2).abs().amax(2).min(1).values
    assert float(dist.max()) <= EPS + 1e-6 and seen.min() >= 0 and seen.max() <= 1


@pytest.fixture
def setup(images):
    x, _ = images
    target, surrogate = make_tiny_resnet(0), make_tiny_resnet(1)
    with torch.no_grad():
        y = target(x).argmax(1)
    return x, y, target, surrogate


def test_transfer_example_fools_surrogate_within_eps(setup):
    x, y, _, surrogate = setup
    gen = torch.Generator().manual_seed(0)
    xt, fooled = transfer_example([surrogate], x, y, eps=EPS, steps=5, diversity=0.7, restarts=2, gen=gen)
    assert (xt - x).abs().max() <= EPS + 1e-6 and xt.min() >= 0 and xt.max() <= 1
    with torch.no_grad():
        pred = surrogate(xt).argmax(1)
    assert torch.equal(fooled, pred != y) and bool(fooled.any())
    gen2 = torch.Generator().manual_seed(0)
    assert torch.equal(xt, transfer_example([surrogate], x, y, eps=EPS, steps=5, diversity=0.7,
                                            restarts=2, gen=gen2)[0])


def test_square_from_transfer_exact_accounting_and_start(setup):
    x, y, target, surrogate = setup
    rec = Recorder(target)
    oracle = BlackBox(rec, max_queries=30)
    atk = Square(oracle, surrogates=[surrogate], init="transfer", mi_steps=3, p_init=0.1, max_queries=30, seed=0)
    res = atk.run(x, y)
    assert_charged_and_in_ball(rec, oracle, res, x, 30)
    # the first query after the clean check is the ±eps vertex of the transfer example
    sign = atk._transfer_start(x, y)
    start = rec.seen[1]
    assert len(start) == 4   # all four images are correctly classified, all start
    expected = (x + EPS * sign).clamp(0, 1)
    nz = sign != 0
    assert torch.allclose(start[nz], expected[nz], atol=1e-6)
    # and the stripes start differs from it
    rec2 = Recorder(target)
    Square(BlackBox(rec2, max_queries=30), p_init=0.1, max_queries=30, seed=0).run(x, y)
    assert not torch.allclose(rec2.seen[1], start)


def _qs(target, surrogate, budget=60, **kw):
    net = target.model.net if isinstance(target, Recorder) else target.net
    interp = CAM(target, target_layer=net.layer3, fc_layer=net.linear)
    oracle = BlackBox(target, interpreter=interp, max_queries=budget)
    params = {"surrogates": [surrogate], "surrogate_interpreter": "cam", "mi_steps": 3, "seed": 0,
              "fitness": "score+map", "stealth_iou": 0.99, "stealth_search": "prune"}
    return QuScore(oracle, **{**params, **kw}), oracle


def test_map_keepout_never_perturbs_the_salient_pixels(setup):
    x, y, target, surrogate = setup
    rec = Recorder(target)
    atk, oracle = _qs(rec, surrogate, map_keepout=0.4)
    res = atk.run(x, y)
    sal = atk._saliency(x, res.info["oracle_benign_map"])
    keep = atk._keep_mask(sal)
    assert abs(float(1 - keep.mean()) - 0.4) < 0.01
    delta = (res.x_adv - x).abs().amax(1, keepdim=True)
    assert float((delta * (1 - keep)).max()) == 0.0          # the kept-out pixels are untouched
    assert float((delta * keep).max()) > 0                     # the others carry the attack
    seen = torch.cat(rec.seen)
    assert int(res.queries.sum()) == oracle.queries == len(seen)
    # without the keep-out the same pixels are perturbed
    plain, _ = _qs(target, surrogate)
    d0 = (plain.run(x, y).x_adv - x).abs().amax(1, keepdim=True)
    assert float((d0 * (1 - keep)).max()) > 0


@pytest.mark.parametrize("focus,lo,hi", [("uniform", 0.15, 0.40), ("map", 0.75, 1.0)])
def test_prune_focus_map_centres_windows_on_the_salient_region(setup, focus, lo, hi):
    x, y, target, surrogate = setup
    atk, _ = _qs(target, surrogate, prune_focus=focus)
    atk._shape = tuple(x.shape[1:])
    pop = _Population(atk, x, y, torch.Generator().manual_seed(0))
    sal = torch.zeros(4, 32, 32)
    sal[:, :16, :16] = 1.0                                     # salient top-left quadrant
    pop.saliency = sal.flatten(1)
    pop.chain_x = (x + EPS).clamp(0, 1)
    pop.prune_frac[:] = 1 / 1024                               # 1x1 windows: the centre itself
    hits = 0.0
    for _ in range(50):
        cand = pop._pruned_candidates(torch.arange(4))
        pruned = (cand == x).all(1)                            # (4, 32, 32): the zeroed pixel
        hits += float(pruned[:, :16, :16].flatten(1).any(1).float().mean())
    assert lo <= hits / 50 <= hi


def _pruning_pop(x, y, target, surrogate, **kw):
    """A population whose images 0..3 all sit at a fooling state (x + eps) with map IoU 0.5."""
    atk, _ = _qs(target, surrogate, **kw)
    atk._shape = tuple(x.shape[1:])
    pop = _Population(atk, x, y, torch.Generator().manual_seed(0))
    pop.best_x = (x + EPS).clamp(0, 1)
    pop.best_map = pop.benign_map.clone()
    pop.best_iou[:] = 0.5
    return pop


@pytest.mark.parametrize("tol,chain_moves", [(0.0, False), (0.05, True)])
def test_prune_tol_lets_the_state_trade_map_iou_for_sparsity(setup, tol, chain_moves):
    x, y, target, surrogate = setup
    pop = _pruning_pop(x, y, target, surrogate, prune_tol=tol)
    answers = iter([0.47, 0.60])           # every candidate fools; IoU 0.47 (a drop of 0.03), then 0.60

    def query(xs, img):
        iou = torch.full((len(img),), next(answers))
        return torch.zeros(len(img), 10), pop.benign_map[img], torch.ones(len(img), dtype=torch.bool), iou, iou

    pop.query = query
    pi = torch.arange(4)
    before = pop.best_x.clone()
    pop.prune(pi)
    # the returned member keeps the best IoU: a drop never replaces it
    assert torch.equal(pop.best_x, before) and torch.allclose(pop.best_iou, torch.full((4,), 0.5))
    removed = (pop.chain_x != before).flatten(1).any(1)
    assert bool(removed.all()) == chain_moves and bool(removed.any()) == chain_moves
    assert pop.prune_fails.tolist() == ([0] * 4 if chain_moves else [1] * 4)
    chain = pop.chain_x.clone()
    pop.prune(pi)                          # IoU 0.60 >= 0.5: the pruned state becomes the returned member
    assert torch.allclose(pop.best_iou, torch.full((4,), 0.60))
    assert torch.equal(pop.best_x, pop.chain_x)
    # the second window was cut from the (possibly already pruned) state, not from the old best
    assert bool(((pop.best_x != x).flatten(1).sum(1) <= (chain != x).flatten(1).sum(1)).all())
    if chain_moves:
        assert bool(((pop.best_x != x).flatten(1).sum(1) < (before != x).flatten(1).sum(1) - 1).all())


def test_prune_focus_diff_centres_windows_where_the_map_moved(setup):
    x, y, target, surrogate = setup
    pop = _pruning_pop(x, y, target, surrogate, prune_focus="diff")
    pop._start_chains(torch.arange(4))
    h = pop.benign_map.shape[-1]
    pop.benign_map = torch.zeros_like(pop.benign_map)
    pop.chain_map = torch.zeros_like(pop.benign_map)
    pop.chain_map[..., : h // 2, : h // 2] = 1.0            # the queried map moved in the top-left quadrant
    pop.prune_frac[:] = 1 / 1024
    hits = 0.0
    for _ in range(50):
        pruned = (pop._pruned_candidates(torch.arange(4)) == x).all(1)
        hits += float(pruned[:, :16, :16].flatten(1).any(1).float().mean())
    assert hits / 50 >= 0.75                                 # uniform: about 0.25


@pytest.mark.parametrize("fooled,lo,hi", [(True, 0.75, 1.0), (False, 0.10, 0.45)])
def test_mutation_focus_diff_places_windows_where_the_best_map_moved(setup, fooled, lo, hi):
    x, y, target, surrogate = setup
    pop = _pruning_pop(x, y, target, surrogate, mutation_focus="diff", square_p=1 / 1024)
    h = pop.benign_map.shape[-1]
    pop.benign_map = torch.zeros_like(pop.benign_map)
    pop.best_map = torch.zeros_like(pop.benign_map)
    pop.best_map[..., h // 2:, h // 2:] = 1.0               # the best member's map moved bottom-right
    pop.best_ok[:] = fooled                                  # not fooled yet: uniform windows
    genes = torch.zeros(4, 3 * 32 * 32, dtype=torch.bool)
    hits = 0.0
    for _ in range(50):
        _, window = pop._mutate(genes, torch.arange(4))      # 1x1 windows: the centre itself
        assert window.flatten(1).sum(1).tolist() == [1] * 4
        hits += float(window[:, 0, 16:, 16:].flatten(1).any(1).float().mean())
    assert lo <= hits / 50 <= hi


def test_prune_tol_and_diff_end_to_end_accounting_and_bounds(setup):
    x, y, target, surrogate = setup
    rec = Recorder(target)
    atk, oracle = _qs(rec, target, budget=60, prune_tol=1.0, prune_focus="diff", mi_steps=10,
                      stealth_queries=25, stealth_iou=1.0, prune_start=10, mutation_focus="diff")
    res = atk.run(x, y)
    assert_charged_and_in_ball(rec, oracle, res, x, 60)
    assert bool(res.success.any())
    again = _qs(target, target, budget=60, prune_tol=1.0, prune_focus="diff", mi_steps=10,
                stealth_queries=25, stealth_iou=1.0, prune_start=10, mutation_focus="diff")[0].run(x, y)
    assert torch.equal(again.x_adv, res.x_adv) and torch.equal(again.queries, res.queries)


def test_params_validated(setup):
    x, y, target, surrogate = setup
    oracle = BlackBox(target, max_queries=10)
    with pytest.raises(ConfigError, match="init"):
        Square(oracle, init="pgd")
    with pytest.raises(ConfigError, match="surrogates"):
        Square(oracle, init="transfer")
    for bad in ({"mi_steps": 0}, {"diversity": 1.5}, {"mi_step": 0}, {"init_rounds": 0}):
        with pytest.raises(ConfigError):
            Square(oracle, surrogates=[surrogate], init="transfer", **bad)
    with pytest.raises(ConfigError, match="map_keepout"):
        _qs(target, surrogate, map_keepout=1.0)
    with pytest.raises(ConfigError, match="map_keepout"):
        _qs(target, surrogate, map_keepout=-0.1)
    with pytest.raises(ConfigError, match="prune_focus"):
        _qs(target, surrogate, prune_focus="edges")
    with pytest.raises(ConfigError, match="prune_focus"):
        _qs(target, surrogate, prune_focus="map", stealth_search="ga")
    with pytest.raises(ConfigError, match="prune_tol"):
        _qs(target, surrogate, prune_tol=0.1, stealth_search="ga")
    for bad in (-0.1, 1.5, float("nan"), True):
        with pytest.raises(ConfigError, match="prune_tol"):
            _qs(target, surrogate, prune_tol=bad)
    with pytest.raises(ConfigError, match="mutation_focus"):
        _qs(target, surrogate, mutation_focus="map")
    with pytest.raises(ConfigError, match="mutation_focus"):
        _qs(target, surrogate, mutation_focus="diff", mutation="bit")
    with pytest.raises(ConfigError, match="mutation_focus"):     # no maps: nothing to place the windows by
        QuScore(BlackBox(target), surrogates=[surrogate], mutation_focus="diff")
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="map_protect"):
            _qs(target, surrogate, map_protect=bad)
    with pytest.raises(ConfigError, match="map_protect"):
        _qs(target, surrogate, map_protect=0.3, stealth_search="ga")


def test_map_protect_confines_the_prune_search_outside_the_protected_region(setup):
    x, y, target, surrogate = setup
    pop = _pruning_pop(x, y, target, surrogate, map_protect=0.5)
    pop.saliency = torch.rand(4, 32 * 32, generator=torch.Generator().manual_seed(1))
    pop.prune_frac[:] = 0.05
    calls = []

    def query(xs, img):
        calls.append(len(img))
        if len(calls) == 1:   # the ladder: rungs 0.5, 0.25, 0.125 per image; 0.5 does not fool
            ok = torch.tensor([False, True, True]).repeat(4)
            iou = torch.full((len(img),), 0.4)                 # below the best (0.5): kept as state anyway
        else:
            ok, iou = torch.ones(len(img), dtype=torch.bool), torch.full((len(img),), 0.6)
        return torch.zeros(len(img), 10), pop.benign_map[img], ok, iou, iou

    pop.query = query
    before = pop.best_x.clone()
    pop.prune(torch.arange(4))
    assert calls == [12, 4]                                    # 3 ladder queries per image, then one prune each
    from idlsec.metrics.maps import topk_mask
    region = topk_mask(pop.saliency, 0.25).view(4, 1, 32, 32)
    assert torch.equal(pop.protect, region) and torch.allclose(pop.protect_frac, torch.full((4,), 0.25))
    inside = region.expand_as(x)
    for _ in range(30):                                        # the pruning never touches the protected region
        cand = pop._pruned_candidates(torch.arange(4))
        assert torch.equal(cand[inside], x[inside])
        assert bool((cand[~inside] != x[~inside]).any())
        pop.prune(torch.arange(4))
    assert torch.equal(pop.chain_x[inside], x[inside]) and torch.equal(pop.best_x[inside], x[inside])
    assert not torch.equal(before[inside], x[inside])          # the state did carry perturbation there
    # without map_protect the same pruning leaves that region perturbed after one step
    plain = _pruning_pop(x, y, target, surrogate)
    plain.prune_frac[:] = 0.05
    plain.query = lambda xs, img: (torch.zeros(len(img), 10), plain.benign_map[img],
                                   torch.ones(len(img), dtype=torch.bool), torch.full((len(img),), 0.6),
                                   torch.full((len(img),), 0.6))
    plain.prune(torch.arange(4))
    assert not torch.equal(plain.chain_x[inside], x[inside])


def test_map_protect_end_to_end_accounting_and_defaults(setup):
    x, y, target, surrogate = setup
    rec = Recorder(target)
    atk, oracle = _qs(rec, target, budget=60, mi_steps=10, stealth_queries=25, stealth_iou=1.0, map_protect=0.4)
    res = atk.run(x, y)
    assert_charged_and_in_ball(rec, oracle, res, x, 60)
    frac = res.info["per_sample"]["protect_frac"]
    assert all(min(abs(f - v) for v in (0.0, 0.4, 0.2, 0.1)) < 1e-6 for f in frac.tolist())
    assert bool((frac > 0).any()) and bool(res.success.any())
    # map_protect=0 is the default: same example, same queries, no extra record
    a = _qs(target, target, budget=60, mi_steps=10, stealth_queries=25, stealth_iou=1.0)[0].run(x, y)
    b = _qs(target, target, budget=60, mi_steps=10, stealth_queries=25, stealth_iou=1.0, map_protect=0.0)[0].run(x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert "protect_frac" not in a.info["per_sample"]


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_prune_resample_sets_the_window_to_a_random_vertex(setup, rate):
    x, y, target, surrogate = setup
    pop = _pruning_pop(x, y, target, surrogate, prune_resample=rate)
    pop._start_chains(torch.arange(4))
    pop.chain_x = (x - EPS).clamp(0, 1)                      # every pixel at its -eps vertex
    pop.prune_frac[:] = 0.05
    flipped = 0
    for _ in range(20):
        cand = pop._pruned_candidates(torch.arange(4))
        changed = (cand != pop.chain_x).any(1)                # (4, 32, 32): the window's pixels
        side = round((0.05 * 1024) ** 0.5)
        assert bool((changed.flatten(1).sum(1) <= side * side).all())   # nothing outside one window
        d = cand - x
        if rate == 0:
            assert torch.equal(cand[changed.unsqueeze(1).expand_as(cand)], x[changed.unsqueeze(1).expand_as(x)])
        else:
            # every pixel is at a vertex (x ± eps, clipped) and the window carries one sign per channel
            clipped = ((x - EPS) < 0) | ((x + EPS) > 1)
            assert bool(((d.abs() - EPS).abs() < 1e-6)[~clipped].all())
            for i in range(4):
                win = changed[i]
                for ch in range(3):
                    signs = torch.sign(d[i, ch][win & ~clipped[i, ch]])
                    assert len(torch.unique(signs)) <= 1
                    flipped += int((signs > 0).any())
    assert (flipped > 0) == (rate > 0)                       # some windows turned to +eps


def test_prune_resample_validated_and_accounted(setup):
    x, y, target, surrogate = setup
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="prune_resample"):
            _qs(target, surrogate, prune_resample=bad)
    with pytest.raises(ConfigError, match="prune_resample"):
        _qs(target, surrogate, prune_resample=0.5, stealth_search="ga")
    rec = Recorder(target)
    atk, oracle = _qs(rec, target, budget=60, mi_steps=10, stealth_queries=25, stealth_iou=1.0, prune_resample=0.5)
    res = atk.run(x, y)
    assert_charged_and_in_ball(rec, oracle, res, x, 60)
    base = _qs(target, target, budget=60, mi_steps=10, stealth_queries=25, stealth_iou=1.0)[0].run(x, y)
    off = _qs(target, target, budget=60, mi_steps=10, stealth_queries=25, stealth_iou=1.0,
              prune_resample=0.0)[0].run(x, y)
    assert torch.equal(base.x_adv, off.x_adv) and torch.equal(base.queries, off.queries)
