"""PIHA-style low-pass fingerprint monitor: near-duplicates under dense noise flagged, distinct
images not, the L∞ guarantee, distances against a direct computation, and no change to counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_resnet
from idlsec.attacks import BlackBox, QuScore, Square
from idlsec.defenses import PIHA, BlackLight
from idlsec.errors import ConfigError, InputError
from idlsec.spec import make_monitor
from test_stateful import smooth_images

EPS = 8 / 255


def dense_noise(x, eps=EPS, seed=0):
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, x.shape, generator=g).float() * 2 - 1
    return (x + eps * sign).clamp(0, 1)


def reference_distances(x: torch.Tensor, block=4, metric="linf") -> list[float]:
    """Nearest earlier query of one stream, written out with NumPy loops: cell means per channel;
    L∞ between them, or the Hamming distance of right/lower-neighbour comparison bits."""
    a = x.numpy().astype(np.float64)
    n, c, h, w = a.shape
    m = a.reshape(n, c, h // block, block, w // block, block).mean((3, 5))
    if metric == "linf":
        f = m.reshape(n, -1)
    else:
        f = np.concatenate([(m[..., :, 1:] > m[..., :, :-1]).reshape(n, -1),
                            (m[..., 1:, :] > m[..., :-1, :]).reshape(n, -1)], 1).astype(float)
    out = [float("inf")]
    for i in range(1, n):
        d = [np.abs(f[i] - f[j]).max() if metric == "linf" else np.abs(f[i] - f[j]).sum()
             for j in range(i)]
        out.append(min(d))
    return out


@pytest.mark.parametrize("metric", ["linf", "hamming"])
def test_dense_noise_near_duplicates_flagged_where_blacklight_is_blind(metric):
    x = smooth_images(8, seed=5)
    noisy = torch.cat([dense_noise(x, seed=s) for s in (1, 2)])
    mon = PIHA(metric=metric)
    assert not mon.observe(x).any()                     # independent images: no flag
    assert mon.observe(noisy).all()                      # every ±8/255 copy is caught
    bl = BlackLight()
    bl.observe(x)
    assert not bl.observe(noisy).any()                   # the exact-window hashes all change


@pytest.mark.parametrize("metric", ["linf", "hamming"])
def test_distinct_natural_images_are_not_flagged(cifar_test, metric):
    x = cifar_test.images[:400].float() / 255
    assert PIHA(metric=metric).observe(x).float().mean().item() <= 0.01


@pytest.mark.parametrize("metric", ["linf", "hamming"])
def test_distances_equal_a_direct_computation(metric):
    x = torch.cat([smooth_images(5, seed=7), dense_noise(smooth_images(3, seed=7), seed=3)])
    # a large threshold keeps every linf distance exact (the pre-filter prunes nothing)
    got = PIHA(metric=metric, threshold=1.0 if metric == "linf" else 0).distances(x)
    want = reference_distances(x, metric=metric)
    assert np.allclose(got.numpy(), want, atol=1e-5)


def test_linf_guarantee_any_queries_within_eps_are_flagged_after_the_first():
    """Worst case inside the ball: every pixel at +eps in one query and -eps in the next (or any
    mix): cell means move by at most 2 * eps, so each later query is flagged at 2 * eps."""
    x = smooth_images(1, seed=11) * 0.8 + 0.1      # away from 0 and 1: no clipping helps
    qs = [(x + EPS).clamp(0, 1), (x - EPS).clamp(0, 1), dense_noise(x, seed=4), x]
    mon = PIHA(threshold=2 * EPS)
    flags = mon.observe(torch.cat(qs))
    assert flags.tolist() == [False, True, True, True]
    assert abs(mon.distances((x + EPS).clamp(0, 1)).item() - 0.0) < 1e-6   # repeat of query 1
    tight = PIHA(threshold=2 * EPS - 1 / 255)        # just below 2 * eps: the +/- pair escapes
    assert tight.observe(torch.cat(qs[:2])).tolist() == [False, False]


def test_prefilter_keeps_the_flags_of_the_full_comparison(cifar_test):
    x = cifar_test.images[:600].float() / 255
    q = torch.cat([dense_noise(x[:40], seed=9), x[600 - 40:]])
    fast = PIHA()
    fast.observe(x[:300])                                 # history > 256: the pre-filter runs
    slow_flags = torch.tensor([min(reference_distances(torch.cat([x[:300], q[i:i + 1]]))[300:])
                               <= 16 / 255 + 1e-6 for i in range(len(q))])
    got = torch.cat([fast.observe(q[i:i + 1]) for i in range(len(q))])
    # one by one against the same 300-image history in both (the fast one also keeps q's rows;
    # q's images are distinct from each other, so that adds no flag)
    assert got.tolist() == slow_flags.tolist()
    assert bool(got[:40].all()) and not bool(got[40:].any())


def test_streams_and_validation():
    x = smooth_images(2)
    mon = PIHA()
    flags = mon.observe(torch.cat([x, x, x[:1]]), torch.tensor([0, 1, 1, 2, 0]))
    assert flags.tolist() == [False, False, False, False, True]
    assert mon.observed == 5
    mon.reset()
    assert mon.observed == 0 and not mon.observe(x[:1]).any()
    with pytest.raises(ConfigError, match="metric"):
        PIHA(metric="l2")
    with pytest.raises(ConfigError, match="threshold"):
        PIHA(metric="hamming", threshold=0.5)
    with pytest.raises(ConfigError, match="threshold"):
        PIHA(threshold=2.0)
    with pytest.raises(InputError, match="streams"):
        PIHA().observe(x, torch.tensor([0]))
    with pytest.raises(InputError, match="block"):
        PIHA(block=64).observe(x)
    assert isinstance(make_monitor({"name": "piha", "metric": "hamming", "threshold": 30}), PIHA)
    with pytest.raises(ConfigError, match="treshold"):
        make_monitor({"name": "piha", "treshold": 3})


@pytest.mark.parametrize("attack", ["square", "quscore"])
def test_monitoring_changes_no_query_count_and_no_result(images, attack):
    x, _ = images
    target, surrogate = make_tiny_resnet(0), make_tiny_resnet(1)
    with torch.no_grad():
        y = target(x).argmax(1)
    runs = []
    for monitor in (None, PIHA()):
        oracle = BlackBox(target, max_queries=40, monitor=monitor)
        torch.manual_seed(0)
        if attack == "square":
            res = Square(oracle, p_init=0.1, max_queries=40, seed=0).run(x, y)
        else:
            res = QuScore(oracle, surrogates=[surrogate], max_queries=40, seed=0, pop_size=4,
                          mi_steps=2).run(x, y)
        runs.append((res, oracle))
    (a, oa), (b, ob) = runs
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert torch.equal(oa.queries_per_image(), ob.queries_per_image())
    det = ob.detections(torch.arange(len(x)))
    # every image sent >= 2 queries within eps of itself: the second one is flagged at the latest
    assert bool((b.queries >= 2).all()) and bool((det >= 2).all() & (det <= 2).all())
