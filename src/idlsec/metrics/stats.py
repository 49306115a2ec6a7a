"""Bootstrap confidence intervals for per-image metrics (docs/protocol.md).

The percentile bootstrap (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, §13.3):
draw ``n_resamples`` samples of the n values with replacement, compute the statistic of each, and
take the (1 − level)/2 and (1 + level)/2 quantiles of those statistics (linear interpolation, as
``numpy.percentile``). Defaults: 10,000 resamples, level 0.95, seed 0; the resamples are one
seeded ``torch.randint`` matrix (vectorised: one gather and one reduction), so an interval is a
pure function of the values and the seed. Missing values (None, NaN) are dropped first, so an
average over successes is resampled over the successful images only.

:func:`interval_columns` turns a configuration's records into the ``<metric>_ci95_lo`` /
``<metric>_ci95_hi`` columns of ``table.csv`` (:data:`CI_METRICS`: what each average is over is
in the summary key's name: ``iou_topk_mean`` over all images, ``iou_topk_success_mean`` over the
successful ones); :func:`format_ci` writes ``0.87 [0.84, 0.90]``.
"""

from __future__ import annotations

import math

import torch

DEFAULT_RESAMPLES = 10_000
LEVEL = 0.95
CHUNK = 1 << 22  # resampled values held at once

# summary key -> (record field, statistic, over): the headline metrics that get an interval
CI_METRICS = {
    "asr": ("success", "mean", "all"),
    "confidence_mean": ("confidence", "mean", "all"),
    "iou_topk_mean": ("iou_topk_mean", "mean", "all"),
    "iou_topk_success_mean": ("iou_topk_mean", "mean", "success"),
    "map_l1_mean": ("map_l1", "mean", "all"),
    "l2_mean": ("l2", "mean", "all"),
    "ssim_image_mean": ("ssim_image", "mean", "all"),
    "edge_energy_ratio_mean": ("edge_energy_ratio", "mean", "all"),
    "queries_mean": ("queries", "mean", "success"),
    "queries_median": ("queries", "median", "success"),
}


def _clean(values) -> torch.Tensor:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return torch.tensor(vals, dtype=torch.float64)


def resample_indices(n: int, n_resamples: int = DEFAULT_RESAMPLES, *, seed: int = 0) -> torch.Tensor:
    """The (n_resamples, n) index matrix of the bootstrap samples (seeded, CPU)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n_resamples, n), generator=gen)


def bootstrap_ci(values, *, stat: str = "mean", n_resamples: int = DEFAULT_RESAMPLES,
                 level: float = LEVEL, seed: int = 0, indices: torch.Tensor | None = None):
    """Percentile bootstrap interval ``(lo, hi)`` of ``stat`` ("mean" or "median") of
    ``values``; ``(None, None)`` with no values. ``indices``: a given (B, n) resample matrix
    (tests), else :func:`resample_indices` with ``n_resamples`` and ``seed``."""
    if stat not in ("mean", "median"):
        raise ValueError(f"stat must be 'mean' or 'median', got {stat!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = _clean(values)
    if x.numel() == 0:
        return None, None
    idx = resample_indices(x.numel(), n_resamples, seed=seed) if indices is None else indices
    # in chunks of rows, to bound memory (B x n doubles); the median interpolates the two middle
    # values (as query_stats and statistics.median)
    step = max(1, CHUNK // x.numel())
    stats = torch.cat([x[part].mean(1) if stat == "mean" else x[part].quantile(0.5, dim=1)
                       for part in idx.split(step)])
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = stats.quantile(q).tolist()
    return lo, hi


def bootstrap_proportion_ci(successes: int, n: int, *, n_resamples: int = DEFAULT_RESAMPLES,
                            level: float = LEVEL, seed: int = 0):
    """Percentile bootstrap interval ``(lo, hi)`` of a proportion ``successes / n`` kept as a
    count (e.g. a fooling rate over 748 held-out images, an accuracy over 10,000): the same
    interval as :func:`bootstrap_ci` of the n 0/1 outcomes, drawn directly, since the mean of
    a resample of n Bernoulli(p̂) outcomes is Binomial(n, p̂) / n (no n-wide index matrix).
    ``(None, None)`` for n = 0."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return None, None
    gen = torch.Generator().manual_seed(seed)
    count = torch.full((n_resamples,), float(n), dtype=torch.float64)
    means = torch.binomial(count, torch.full_like(count, successes / n), generator=gen) / n
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = means.quantile(q).tolist()
    return lo, hi


def bootstrap_ratio_ci(numerator, denominator, *, stat: str = "median", paired: bool = True,
                       n_resamples: int = DEFAULT_RESAMPLES, level: float = LEVEL, seed: int = 0):
    """Percentile bootstrap interval ``(lo, hi)`` of ``stat(numerator) / stat(denominator)``
    (e.g. a time ratio over timing repeats). ``paired``: both lists are resampled with the same
    indices (repeat i of each was timed in the same round; they must be as long), else each
    with its own (two independent samples, e.g. the step times of two separate runs)."""
    if stat not in ("mean", "median"):
        raise ValueError(f"stat must be 'mean' or 'median', got {stat!r}")
    num, den = _clean(numerator), _clean(denominator)
    if paired and num.numel() != den.numel():
        raise ValueError(f"paired samples must be as long: {num.numel()} and {den.numel()}")
    if num.numel() == 0 or den.numel() == 0:
        return None, None
    i = resample_indices(num.numel(), n_resamples, seed=seed)
    j = i if paired else resample_indices(den.numel(), n_resamples, seed=seed + 1)

    def reduce(x):
        return x.mean(1) if stat == "mean" else x.quantile(0.5, dim=1)

    ratios = reduce(num[i]) / reduce(den[j])
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    lo, hi = ratios.quantile(q).tolist()
    return lo, hi


def metric_values(records: list[dict], summary_key: str) -> list:
    """The per-image values behind a summary key of :data:`CI_METRICS` (successes only where
    the average is over successes)."""
    field, _, over = CI_METRICS[summary_key]
    rows = [r for r in records if r.get("success")] if over == "success" else records
    return [float(r[field]) if r.get(field) is not None else None for r in rows]


def interval_columns(records: list[dict], *, level: float = LEVEL,
                     n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """``{<key>_ci95_lo: .., <key>_ci95_hi: ..}`` for every metric of :data:`CI_METRICS` the
    records hold (the same resample seed for each, so the columns are reproducible)."""
    if not records:
        return {}
    tag = f"ci{round(level * 100):d}"
    out = {}
    for key, (field, stat, _) in CI_METRICS.items():
        if not any(field in r for r in records):
            continue
        lo, hi = bootstrap_ci(metric_values(records, key), stat=stat, level=level,
                              n_resamples=n_resamples, seed=seed)
        if lo is not None:
            out[f"{key}_{tag}_lo"], out[f"{key}_{tag}_hi"] = lo, hi
    return out


def format_ci(value, lo, hi, spec: str = "{:.2f}") -> str:
    """``0.87 [0.84, 0.90]``; ``–`` without a value; the value alone without an interval."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if lo is None or hi is None:
        return spec.format(value)
    return f"{spec.format(value)} [{spec.format(lo)}, {spec.format(hi)}]"
