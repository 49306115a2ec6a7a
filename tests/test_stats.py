"""Bootstrap intervals (idlsec.metrics.stats) against cases whose answer is known by hand."""

from __future__ import annotations

import math

import pytest
import torch

from idlsec.metrics.stats import bootstrap_ci, format_ci, interval_columns, resample_indices


def test_fixed_resamples_give_the_hand_computed_percentiles():
    # values (0, 1); the four resamples (0,0) (0,1) (1,1) (1,0) have means 0, .5, 1, .5; sorted
    # (0, .5, .5, 1): the 2.5% quantile sits at position 0.075 -> 0.0375, the 97.5% at 2.925 -> 0.9625
    idx = torch.tensor([[0, 0], [0, 1], [1, 1], [1, 0]])
    lo, hi = bootstrap_ci([0.0, 1.0], indices=idx)
    assert lo == pytest.approx(0.0375) and hi == pytest.approx(0.9625)
    # the median of a 3-value resample is its middle value: resamples of (1, 2, 10)
    idx = torch.tensor([[0, 0, 0], [0, 1, 2], [2, 2, 1], [1, 1, 1], [0, 2, 2]])  # medians 1, 2, 10, 2, 10
    lo, hi = bootstrap_ci([1.0, 2.0, 10.0], stat="median", indices=idx, level=0.5)
    assert (lo, hi) == pytest.approx((2.0, 10.0))  # quantiles 0.25 and 0.75 of (1, 2, 2, 10, 10)


def _binom_quantile(n, p, q):
    """Smallest k with P(Binomial(n, p) <= k) >= q."""
    acc = 0.0
    for k in range(n + 1):
        acc += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if acc >= q:
            return k
    return n


def test_success_rate_interval_is_the_binomial_quantile_pair():
    # resampling n successes/failures with replacement makes the count Binomial(n, p_hat): the
    # percentile interval of the rate is (its 2.5% and 97.5% quantiles) / n, here [0.30, 0.70]
    n, k = 20, 10
    values = [1.0] * k + [0.0] * (n - k)
    lo, hi = bootstrap_ci(values, n_resamples=20_000, seed=3)
    assert lo == pytest.approx(_binom_quantile(n, 0.5, 0.025) / n) == pytest.approx(0.30)
    assert hi == pytest.approx(_binom_quantile(n, 0.5, 0.975) / n) == pytest.approx(0.70)


def test_mean_interval_matches_the_normal_width_for_a_large_sample():
    # the bootstrap mean's variance is the sample's (population) variance / n: for n = 400 the
    # percentile interval is mean +- 1.96 sd within Monte-Carlo error
    x = torch.rand(400, generator=torch.Generator().manual_seed(1)).tolist()
    lo, hi = bootstrap_ci(x, n_resamples=20_000)
    t = torch.tensor(x, dtype=torch.float64)
    sd = float(t.std(unbiased=False)) / math.sqrt(len(x))
    assert hi - lo == pytest.approx(2 * 1.959964 * sd, rel=0.05)
    assert (lo + hi) / 2 == pytest.approx(float(t.mean()), abs=0.1 * sd)


def test_seeded_degenerate_and_missing_values():
    x = [0.1, 0.5, 0.7, None, float("nan"), 0.9]
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)
    assert bootstrap_ci(x, seed=5) == bootstrap_ci([0.1, 0.5, 0.7, 0.9], seed=5)  # missing dropped
    assert bootstrap_ci([0.4] * 7) == pytest.approx((0.4, 0.4))
    assert bootstrap_ci([]) == (None, None)
    assert resample_indices(5, 3, seed=2).shape == (3, 5)
    with pytest.raises(ValueError):
        bootstrap_ci(x, stat="mode")


def test_interval_columns_average_over_what_their_name_says():
    # failures keep IoU 0, successes IoU 1: over successes the interval is [1, 1]; over all it is not
    recs = [{"success": i % 2 == 0, "confidence": 0.5, "iou_topk_mean": float(i % 2 == 0)} for i in range(10)]
    cols = interval_columns(recs)
    assert cols["iou_topk_success_mean_ci95_lo"] == cols["iou_topk_success_mean_ci95_hi"] == 1.0
    assert cols["iou_topk_mean_ci95_lo"] < 0.5 < cols["iou_topk_mean_ci95_hi"]
    assert cols["asr_ci95_lo"] < 0.5 < cols["asr_ci95_hi"]
    assert "queries_mean_ci95_lo" not in cols and interval_columns([]) == {}


def test_format_ci():
    assert format_ci(0.8712, 0.84, 0.9) == "0.87 [0.84, 0.90]"
    assert format_ci(12.0, None, None, "{:.0f}") == "12"
    assert format_ci(None, 0, 1) == "–"


def test_proportion_interval_equals_the_bootstrap_of_its_outcomes():
    from idlsec.metrics.stats import bootstrap_proportion_ci

    k, n = 61, 200
    outcomes = [1.0] * k + [0.0] * (n - k)
    lo, hi = bootstrap_proportion_ci(k, n)
    ref_lo, ref_hi = bootstrap_ci(outcomes)
    assert lo < k / n < hi
    # two Monte Carlo estimates (10,000 resamples each) of the same percentiles: within 1/n
    assert abs(lo - ref_lo) <= 1 / n + 1e-9 and abs(hi - ref_hi) <= 1 / n + 1e-9
    assert bootstrap_proportion_ci(k, n) == (lo, hi)  # seeded
    assert bootstrap_proportion_ci(0, 50) == (0.0, 0.0)
    assert bootstrap_proportion_ci(50, 50) == (1.0, 1.0)
    assert bootstrap_proportion_ci(0, 0) == (None, None)
    with pytest.raises(ValueError):
        bootstrap_proportion_ci(5, 4)


def test_ratio_interval_paired_and_independent():
    from idlsec.metrics.stats import bootstrap_ratio_ci

    den = [1.0, 2.0, 3.0, 4.0, 5.0]
    # paired repeats whose ratio is exactly 2 in every round: no spread at all
    lo, hi = bootstrap_ratio_ci([2 * d for d in den], den)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)
    # resampled independently, the same lists give a ratio that spreads around 2
    lo, hi = bootstrap_ratio_ci([2 * d for d in den], den, paired=False)
    assert lo < 2.0 < hi
    assert bootstrap_ratio_ci([3.0] * 4, [1.5] * 7, paired=False) == pytest.approx((2.0, 2.0))
    with pytest.raises(ValueError):
        bootstrap_ratio_ci([1.0, 2.0], [1.0])
    assert bootstrap_ratio_ci([], [1.0], paired=False) == (None, None)
