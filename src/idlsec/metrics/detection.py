"""Detection metrics as pure functions of detector scores (higher score = more suspicious).

``auroc(benign, adversarial)`` is the Mann-Whitney probability that an adversarial score exceeds
a benign one (ties count one half); ``threshold_at_fpr`` is the benign (1 - fpr) quantile used
to calibrate a detector; ``tpr_at_fpr`` flags ``score > threshold``, as ADV^2's detectors do at
the 95th percentile of benign scores."""

from __future__ import annotations

import math

import torch

from ..errors import InputError


def _scores(s, name: str) -> torch.Tensor:
    if not isinstance(s, torch.Tensor):
        s = torch.as_tensor(s, dtype=torch.float64)
    s = s.detach().flatten().double().cpu()
    if s.numel() == 0:
        raise InputError(f"{name} scores are empty")
    if not torch.isfinite(s).all():
        raise InputError(f"{name} scores contain NaN or Inf")
    return s


def _check_fpr(fpr: float) -> float:
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 < fpr < 1:
        raise InputError(f"fpr must be a fraction in (0, 1), got {fpr!r}")
    return float(fpr)


def threshold_at_fpr(benign, fpr: float = 0.05) -> float:
    """The smallest threshold t such that at most ``fpr`` of the benign scores are > t.

    With n benign scores this is the ceil(n(1 - fpr))-th smallest score, so the false-positive
    rate on these scores is <= fpr (it equals fpr when n·fpr is an integer and there are no ties)."""
    s = torch.sort(_scores(benign, "benign")).values
    fpr = _check_fpr(fpr)
    k = max(1, math.ceil(len(s) * (1 - fpr) - 1e-9))
    return float(s[k - 1])


def tpr_at_fpr(benign, adversarial, fpr: float = 0.05) -> float:
    """True-positive rate on ``adversarial`` at the threshold calibrated on ``benign``."""
    t = threshold_at_fpr(benign, fpr)
    return float((_scores(adversarial, "adversarial") > t).double().mean())


def fpr_at(benign, threshold: float) -> float:
    """Fraction of benign scores flagged (> threshold)."""
    return float((_scores(benign, "benign") > threshold).double().mean())


def auroc(benign, adversarial) -> float:
    """Area under the ROC curve (adversarial = positive class), with ties counted one half."""
    b, a = _scores(benign, "benign"), _scores(adversarial, "adversarial")
    both = torch.cat([b, a])
    sorted_vals, order = torch.sort(both, stable=True)
    n = both.numel()
    pos = torch.arange(1, n + 1, dtype=torch.float64)
    new_group = torch.ones(n, dtype=torch.bool)
    new_group[1:] = sorted_vals[1:] != sorted_vals[:-1]
    group = new_group.long().cumsum(0) - 1
    sums = torch.zeros(n, dtype=torch.float64).scatter_add_(0, group, pos)
    counts = torch.zeros(n, dtype=torch.float64).scatter_add_(0, group, torch.ones(n, dtype=torch.float64))
    ranks = torch.empty(n, dtype=torch.float64).scatter_(0, order, (sums / counts)[group])
    r_adv = ranks[len(b):].sum()
    na, nb = len(a), len(b)
    return float((r_adv - na * (na + 1) / 2) / (na * nb))


def roc_curve(benign, adversarial) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fpr, tpr, thresholds) over every distinct score, from strictest to loosest threshold."""
    b, a = _scores(benign, "benign"), _scores(adversarial, "adversarial")
    thresholds = torch.unique(torch.cat([b, a]), sorted=True).flip(0)
    fpr = (b.unsqueeze(0) >= thresholds.unsqueeze(1)).double().mean(1)
    tpr = (a.unsqueeze(0) >= thresholds.unsqueeze(1)).double().mean(1)
    return fpr, tpr, thresholds


def detection_summary(benign, adversarial, *, fpr: float = 0.05, threshold: float | None = None) -> dict:
    """AUROC and TPR at ``fpr``; with an externally calibrated ``threshold`` (the detector's own,
    fitted on other benign images) also the TPR and the FPR measured at that threshold."""
    out = {"auroc": auroc(benign, adversarial), "tpr_at_fpr": tpr_at_fpr(benign, adversarial, fpr),
           "fpr_target": fpr, "n_benign": int(_scores(benign, "benign").numel()),
           "n_adversarial": int(_scores(adversarial, "adversarial").numel())}
    if threshold is not None:
        out["tpr_at_threshold"] = float((_scores(adversarial, "adversarial") > threshold).double().mean())
        out["fpr_at_threshold"] = fpr_at(benign, threshold)
    return out
