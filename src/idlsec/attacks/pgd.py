"""PGD: projected gradient descent in the L∞ ball (Madry et al., ICLR 2018).

Defaults follow torchattacks.PGD: eps = 8/255, alpha = 2/255, steps = 10, random start.
Targeted: descend the cross-entropy to y (the targets); untargeted: ascend it for the true y.
The interpreter, if given, is used only for the benign/adversarial maps of the result.
``compile=True``: the forward/backward of each step runs compiled (:mod:`idlsec.compiling`).
``cuda_graph=True``: on CUDA the step (forward, loss, backward to the input, sign step, projection)
is replayed from a CUDA graph (:mod:`idlsec.cuda_graphs`). ``amp="bf16"|"fp16"``: the forward pass
under autocast, the loss in float32 (:mod:`idlsec.precision`). All default off.
Deviation (numerics only): the cross-entropy is :func:`idlsec.metrics.losses.exact_cross_entropy`
(same value; its gradient keeps the true-class term when p_y rounds to 1 in float32)."""

from __future__ import annotations

import torch

from ..metrics.losses import exact_cross_entropy
from ..precision import f32
from ..validation import check_int, check_positive
from .base import Attack, linf_box
from .registry import register_attack


@register_attack
class PGD(Attack):
    name = "pgd"

    def __init__(self, model, interpreter=None, *, eps=8 / 255, alpha=2 / 255, steps=10,
                 random_start=True, targeted=False, seed=0, compile=False, cuda_graph=False,  # noqa: A002
                 amp=None, progress=False, callback=None):
        super().__init__(model, interpreter, eps=eps, targeted=targeted, seed=seed, progress=progress,
                         callback=callback)
        self.alpha, self.steps, self.random_start, self.compile = alpha, steps, random_start, compile
        self.cuda_graph, self.amp = cuda_graph, amp
        self._check_params()

    def _check_params(self):
        super()._check_params()
        check_positive("alpha", self.alpha, upper=1.0)
        check_int("steps", self.steps)

    def _run(self, x, y, target_map):
        x_adv = x.clone()
        if self.random_start:
            noise = torch.rand(x.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype)
            x_adv = (x + (2 * noise - 1) * self.eps).clamp_(0, 1)
        losses = []
        lower, upper = linf_box(x, self.eps)
        step = self._stepper("pgd", self._step)
        for _ in self._steps(self.steps):
            x_adv, loss = step(x_adv, y, lower, upper)
            losses.append(loss)
        history = torch.stack(losses).tolist() if losses else []
        return x_adv, {"steps": self.steps, "loss_history": history}

    def _step(self, x_adv, y, lower, upper):
        """One step: (the next example, the loss at this one)."""
        x_adv = x_adv.detach().requires_grad_(True)
        with self._autocast(x_adv):
            logits = self.model(x_adv)
        loss = exact_cross_entropy(f32(logits), y, reduction="mean")
        (grad,) = torch.autograd.grad(loss, x_adv)
        step = -self.alpha if self.targeted else self.alpha
        return torch.add(x_adv.detach(), grad.sign_(), alpha=step).clamp_(lower, upper), loss.detach()
