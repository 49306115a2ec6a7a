"""Transfer examples on local surrogates: MI-FGSM (Dong et al., CVPR 2018) with input diversity
(DI, Xie et al., CVPR 2019), shared by QuScore's stage A and Square's ``init="transfer"``.

Surrogates are white-box models the attacker holds; nothing here touches the victim, so a transfer
example costs no query. Defaults are QuScore's (the authors' released ``mi_fgsm.py``): 10 steps of
0.01, momentum 1.0; ``diversity`` is the probability of one random resize-and-pad per step (0: off;
QuScore's idlsec preset: 0.7).
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn.functional as F

from ..interpreters.base import eval_mode
from ..metrics.losses import exact_cross_entropy


def ensemble_logits(surrogates, x):
    """Mean logits over the surrogate ensemble."""
    return torch.stack([s(x) for s in surrogates]).mean(0)


def input_diversity(x, prob, gen):
    """DI: with probability ``prob``, resize to a random side in [H, 1.125 H) and zero-pad at a
    random offset to 1.125 H (surrogates with global average pooling accept the larger input)."""
    if prob <= 0 or float(torch.rand((), generator=gen, device=x.device)) >= prob:
        return x
    h = x.shape[-1]
    out = round(h * 1.125)
    side = int(torch.randint(h, out, (), generator=gen, device=x.device))
    top, left = (int(v) for v in torch.randint(0, out - side + 1, (2,), generator=gen, device=x.device))
    z = F.interpolate(x, size=(side, side), mode="nearest")
    return F.pad(z, (left, out - side - left, top, out - side - top))


def mi_fgsm(surrogates, x_start, x0, labels, *, eps, steps=10, step=0.01, momentum=1.0, diversity=0.0,
            targeted=False, mask=None, gen=None, loss_fn=None):
    """Batched MI-FGSM on the surrogate ensemble within the L∞ ``eps``-ball of ``x0`` (and [0, 1]).

    ``mask`` (broadcastable to x, 0/1) confines the perturbation; ``loss_fn(x, labels)`` (optional)
    replaces the ensemble's cross-entropy of the clean input (it returns ``(loss, logits_override)``
    with the second None unless the caller wants its own logits); with ``diversity`` > 0 the
    cross-entropy is taken on a diverse copy. Untargeted ascends the loss, targeted descends it."""
    mask = torch.ones_like(x0[:, :1]) if mask is None else mask
    x, g = x_start.clone(), torch.zeros_like(x_start)
    direction = -1.0 if targeted else 1.0
    for _ in range(steps):
        x.requires_grad_(True)
        if loss_fn is not None:
            loss, logits = loss_fn(x, labels)
        else:
            loss, logits = None, ensemble_logits(surrogates, x)
        if gen is not None and diversity > 0:
            xd = input_diversity(x, diversity, gen)
            if xd is not x:
                logits = ensemble_logits(surrogates, xd)
        ce = exact_cross_entropy(logits, labels, reduction="sum")
        loss = ce if loss is None else ce + loss
        (grad,) = torch.autograd.grad(loss, x)
        grad = grad * mask
        g = momentum * g + grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x = x.detach() + direction * step * g.sign()
        x = (x0 + (x - x0).clamp(-eps, eps) * mask).clamp(0, 1)
    return x.detach()


def transfer_example(surrogates, x0, y, *, eps, steps=10, step=0.01, momentum=1.0, diversity=0.0,
                     restarts=1, targeted=False, mask=None, gen=None):
    """One transfer example per image: MI-FGSM from a uniform random start in the eps-ball, restarted
    (up to ``restarts`` times in all) for the images whose example does not fool the surrogates.
    Returns (x_adv, fooled_surrogates)."""
    mask = torch.ones_like(x0[:, :1]) if mask is None else mask
    x_adv = x0.clone()
    todo = torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device)
    fooled = torch.zeros_like(todo)
    with ExitStack() as stack:
        for s in surrogates:
            stack.enter_context(eval_mode(s))
        for _ in range(restarts):
            noise = torch.rand(x0[todo].shape, generator=gen, device=x0.device, dtype=x0.dtype)
            start = (x0[todo] + (2 * noise - 1) * eps * mask[todo]).clamp(0, 1)
            x_adv[todo] = mi_fgsm(surrogates, start, x0[todo], y[todo], eps=eps, steps=steps, step=step,
                                  momentum=momentum, diversity=diversity, targeted=targeted,
                                  mask=mask[todo], gen=gen)
            with torch.no_grad():
                pred = ensemble_logits(surrogates, x_adv).argmax(1)
            fooled = pred == y if targeted else pred != y
            todo = ~fooled
            if not bool(todo.any()):
                break
    return x_adv, fooled
