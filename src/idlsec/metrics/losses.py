"""Cross-entropy whose gradient stays exact in float32 for confident predictions (issue 16).

``F.cross_entropy`` back-propagates ``softmax(z) - onehot(y)``; its y component ``p_y - 1`` is formed
by a subtraction that rounds to 0 once ``p_y`` rounds to 1 (a top-logit margin above ~17 in float32),
so an attack or a Grad map that differentiates it sees rounding noise on the images the model is
surest of. :func:`exact_cross_entropy` has the same value but builds the gradient from the small
probabilities themselves. It lives here, below interpreters, attacks and defenses, so that all of
them can use it without an import cycle; ``idlsec.interpreters.grad`` re-exports it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError

REDUCTIONS = ("none", "mean", "sum")


def exact_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                        reduction: str = "sum") -> torch.Tensor:
    """``-log softmax(logits)_y`` computed as ``softplus(logsumexp_{j != y}(z_j - z_y))``.

    Same value as ``F.cross_entropy``, but its gradient with respect to the logits,
    ``p_j`` for j != y and ``-sum_{j != y} p_j`` at y, is built from the small probabilities
    themselves (``sigmoid`` of a very negative number, times a softmax over the other classes),
    never as ``p_y - 1``: it keeps float32's relative precision when ``p_y`` rounds to 1, where
    autograd through ``log_softmax`` loses the y component entirely. Differentiable twice.
    ``reduction``: ``"sum"`` (default, the Grad map's), ``"mean"`` (``F.cross_entropy``'s default)
    or ``"none"`` (per sample)."""
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if logits.shape[1] < 2:
        return F.cross_entropy(logits, target, reduction=reduction)
    idx = target.view(-1, 1)
    others = (logits - logits.gather(1, idx)).scatter(1, idx, float("-inf"))
    loss = F.softplus(torch.logsumexp(others, 1))
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def exact_smooth_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                               conf) -> torch.Tensor:
    """Label-smoothed cross-entropy per sample: weight ``conf`` (float or Tensor(N)) on the target,
    ``1 - conf`` spread evenly over the other K-1 classes. Written as
    ``CE_exact - (1 - conf) * mean_{j != y}(z_j - z_y)`` (since ``log p_j = z_j - z_y + log p_y``),
    so its gradient ``p - smoothed_onehot`` is exact for confident predictions too."""
    ce = exact_cross_entropy(logits, target, reduction="none")
    k = logits.shape[1]
    if k < 2:
        return ce
    conf = torch.as_tensor(conf, dtype=logits.dtype, device=logits.device).expand(logits.shape[0])
    gap = (logits - logits.gather(1, target.view(-1, 1))).sum(1) / (k - 1)   # the y term is 0
    return ce - (1 - conf) * gap
