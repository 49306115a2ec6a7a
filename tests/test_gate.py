"""DetectorGate: a history monitor OR a stateless detector, so that a stream's first query can be
flagged; the detector scores only streams not yet flagged."""

from __future__ import annotations

import pytest
import torch

from idlsec.attacks import BlackBox
from idlsec.attacks.oracle import QueryRefused
from idlsec.defenses import PIHA, DetectorGate, FeatureSqueezing
from idlsec.errors import ConfigError
from test_stateful import MeanVictim, smooth_images


class NoiseDetector:
    """Scores a query by its high-frequency energy (a sign perturbation is loud, a smooth image is
    quiet) and counts the rows it is asked to score."""

    threshold = 0.035                      # smooth images: 0.02-0.03; with ±8/255 signs: 0.043-0.047

    def __init__(self):
        self.rows = 0

    def score(self, x):
        self.rows += x.shape[0]
        return (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))


def noisy(x, eps=8 / 255, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (x + eps * torch.randint(0, 2, x.shape, generator=g).mul(2).sub(1)).clamp(0, 1)


def test_first_query_is_flagged_by_the_detector_later_ones_by_the_history():
    x = smooth_images(3, seed=0)
    det = NoiseDetector()
    gate = DetectorGate(PIHA(), det)
    # stream 0 opens with a loud (transfer-like) query, streams 1 and 2 with clean images
    first = torch.cat([noisy(x[:1]), x[1:]])
    assert gate.observe(first, torch.tensor([0, 1, 2])).tolist() == [True, False, False]
    assert PIHA().observe(first, torch.tensor([0, 1, 2])).tolist() == [False] * 3  # history alone
    # a smooth step within eps of stream 1's image: the history flags it, the detector would not
    step = (x[1:2] + 4 / 255).clamp(0, 1)
    assert gate.observe(step, torch.tensor([1])).tolist() == [True]
    assert det.rows == 3                                   # flagged by the history: not scored
    # flagged streams are not scored again; a fresh stream is
    flags = gate.observe(torch.cat([smooth_images(1, seed=9), smooth_images(1, seed=8), x[2:3]]),
                         torch.tensor([0, 1, 3]))
    assert flags.tolist() == [True, True, False] and det.rows == 4 and gate.scored == 4
    gate.reset()
    assert gate.observe(x[1:2], torch.tensor([1])).tolist() == [False] and gate.scored == 1


def test_a_row_after_its_streams_flagged_row_in_the_same_call_is_not_scored():
    x = smooth_images(1, seed=2)
    det = NoiseDetector()
    gate = DetectorGate(PIHA(), det)
    flags = gate.observe(torch.cat([x, x, noisy(x)]), torch.tensor([0, 0, 0]))
    assert flags.tolist() == [False, True, True] and det.rows == 1


def test_in_the_oracle_a_transferred_first_query_is_refused():
    x = smooth_images(2, seed=3)
    victim = MeanVictim()
    bb = BlackBox(victim, max_queries=None, monitor=DetectorGate(PIHA(), NoiseDetector()),
                  on_detect="refuse")
    with pytest.raises(QueryRefused):
        bb(noisy(x[:1]), torch.tensor([0]))
    assert victim.rows == 0 and bb.queries == 1 and bb.detections(torch.tensor([0])).tolist() == [1]
    assert bb(x[1:], torch.tensor([1])).shape == (1, 10)    # a clean first query is answered
    bb_plain = BlackBox(MeanVictim(), max_queries=None, monitor=PIHA(), on_detect="refuse")
    assert bb_plain(noisy(x[:1]), torch.tensor([0])).shape == (1, 10)   # the history cannot


def test_detector_alone_and_with_a_fitted_library_detector(tiny_model):
    x = smooth_images(8, seed=4)
    det = FeatureSqueezing(tiny_model).fit(x, fpr=0.25)
    gate = DetectorGate(None, det)
    flags = gate.observe(x, torch.arange(8))
    assert torch.equal(flags, det.score(x) > det.threshold)


def test_validation():
    with pytest.raises(ConfigError, match="fitted"):
        DetectorGate(PIHA(), FeatureSqueezing(torch.nn.Linear(1, 1)))
    with pytest.raises(ConfigError, match="observe"):
        DetectorGate(object(), NoiseDetector())
    with pytest.raises(ConfigError, match="sticky"):
        DetectorGate(PIHA(), NoiseDetector(), sticky="no")


def test_not_sticky_judges_every_query_on_its_own():
    x = smooth_images(2, seed=5)
    stream = torch.cat([noisy(x[:1]), x[1:], noisy(x[1:], seed=3)])   # one client
    sticky = DetectorGate(None, NoiseDetector()).observe(stream)
    each = DetectorGate(None, NoiseDetector(), sticky=False).observe(stream)
    assert sticky.tolist() == [True, True, True] and each.tolist() == [True, False, True]
