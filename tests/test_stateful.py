"""BlackLight (stateful query-similarity monitor) and the oracle's monitor hook."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from idlsec.attacks import BlackBox
from idlsec.attacks.oracle import QueryRefused
from idlsec.defenses import BlackLight
from idlsec.errors import ConfigError, InputError


def smooth_images(n, seed=0):
    """Independent smooth random images (upsampled 4x4 noise): natural-looking low frequency."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)


def reference_fingerprint(img: torch.Tensor, step=50, w=20, k=50) -> set[str]:
    """The authors' recipe written out directly: HWC uint8, round to multiples of ``step``, every
    window of w values hashed (hex SHA-256), the k largest distinct hex digests."""
    a = img.permute(1, 2, 0).numpy().astype(np.float64) * 255.0
    a = (np.round(a / step) * step).astype(np.uint8).reshape(-1)
    digests = {hashlib.sha256(a[i:i + w].tobytes()).hexdigest() for i in range(a.size - w + 1)}
    return set(sorted(digests, reverse=True)[:k])


def test_identical_and_near_identical_queries_are_flagged():
    x = smooth_images(3)
    mon = BlackLight()
    assert not mon.observe(x).any()                     # independent images: no flag
    assert mon.observe(x[1:2]).all()                     # the same image again
    near = x[2:3].clone()
    near[..., 8:16, 8:16] = (near[..., 8:16, 8:16] + 8 / 255).clamp(0, 1)   # a Square-like step
    assert mon.observe(near).all()
    assert mon.observed == 5
    mon.reset()
    assert mon.observed == 0 and not mon.observe(x[1:2]).any()


def test_overlap_matches_the_papers_recipe():
    """matches() equals the overlap of the reference top-k hex-digest sets (ties aside)."""
    x = smooth_images(2, seed=3)
    pairs = [(x[0], (x[0] + 3 / 255).clamp(0, 1)), (x[0], x[0].flip(2)), (x[0], x[1]),
             (x[0], torch.roll(x[0], 1, dims=2))]
    for a, b in pairs:
        mon = BlackLight()
        got = mon.matches(torch.stack([a, b]))
        want = len(reference_fingerprint(a) & reference_fingerprint(b))
        assert got.tolist() == [0, want]


def test_independent_natural_images_are_not_flagged(cifar_test):
    x = cifar_test.images[:300].float() / 255
    assert BlackLight().observe(x).float().mean().item() <= 0.01


def test_streams_keep_separate_histories():
    x = smooth_images(2)
    mon = BlackLight()
    flags = mon.observe(torch.cat([x, x, x[:1]]), torch.tensor([0, 1, 1, 2, 0]))
    # row 2 (x0 on stream 1) and row 3 (x1 on stream 2) are new to their streams; row 4 repeats
    # stream 0's first query; row 1 (x1 on stream 1) is stream 1's first
    assert flags.tolist() == [False, False, False, False, True]


def test_parameters_are_validated():
    with pytest.raises(ConfigError, match="threshold"):
        BlackLight(top_k=10, threshold=11)
    with pytest.raises(ConfigError, match="window"):
        BlackLight(window=0)
    with pytest.raises(InputError, match="streams"):
        BlackLight().observe(smooth_images(2), torch.tensor([0]))
    with pytest.raises(ConfigError, match="monitor"):
        BlackBox(nn.Linear(2, 2), monitor=object())
    with pytest.raises(ConfigError, match="on_detect"):
        BlackBox(nn.Linear(2, 2), on_detect="ban")


class MeanVictim(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 10, generator=torch.Generator().manual_seed(0)))
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return x.mean((2, 3)) @ self.weight


def test_detection_index_is_exact_on_a_constructed_stream():
    x = smooth_images(6, seed=1)
    victim = MeanVictim()
    bb = BlackBox(victim, max_queries=None, monitor=BlackLight())
    bb(x[[0, 1, 2]], torch.tensor([0, 0, 1]))        # id 0: queries 1, 2; id 1: query 1
    bb(x[[2, 5]], torch.tensor([1, 0]))              # id 1 query 2 repeats its query 1; id 0: 3
    assert bb.detections(torch.tensor([0, 1, 7])).tolist() == [-1, 2, -1]
    bb(x[[3, 4, 0, 1]], torch.tensor([3, 0, 0, 0]))  # id 0: 4 new, 5 = its 1st, 6 = its 2nd
    bb(x[[2]], torch.tensor([1]))                    # id 1 flagged again: the first one stays
    assert bb.detections().tolist() == [5, 2, -1, -1]
    assert bb.queries_per_image().tolist() == [6, 3, 0, 1]
    bb.reset()
    assert bb.detections().numel() == 0
    bb(x[[0]], torch.tensor([0]))                    # the monitor's history was reset too
    assert bb.detections().tolist() == [-1]


def test_monitoring_changes_no_count_and_no_answer():
    x = smooth_images(5, seed=2)
    stream = [(x[[0, 1]], torch.tensor([0, 1])), (x[[0, 0, 2]], torch.tensor([0, 0, 1])),
              (x[[3, 4, 3]], torch.tensor([2, 2, 2]))]
    plain, watched = MeanVictim(), MeanVictim()
    a, b = BlackBox(plain, max_queries=4), BlackBox(watched, max_queries=4, monitor=BlackLight())
    for xs, ids in stream:
        assert torch.equal(a(xs, ids), b(xs, ids))
    assert a.queries == b.queries == plain.rows == watched.rows == 8
    assert torch.equal(a.queries_per_image(), b.queries_per_image())
    assert b.detections().tolist() == [2, -1, 3]


def test_refuse_mode_counts_then_refuses():
    x = smooth_images(2, seed=4)
    victim = MeanVictim()
    bb = BlackBox(victim, max_queries=None, monitor=BlackLight(), on_detect="refuse")
    bb(x, torch.tensor([0, 1]))
    with pytest.raises(QueryRefused):
        bb(x[[0]], torch.tensor([0]))                # a repeat: counted, not evaluated
    assert victim.rows == 2 and bb.queries == 3
    with pytest.raises(QueryRefused):
        bb(x[[1]], torch.tensor([0]))                # id 0 stays refused, even for a new image
    assert bb(x[[1]], torch.tensor([2])).shape == (1, 10)   # another stream is answered
