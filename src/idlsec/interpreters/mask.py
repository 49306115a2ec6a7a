"""MASK: meaningful perturbation (Fong & Vedaldi, ICCV 2017), both configurations of ADV^2
(``expr_attacks/mask_model.py``, ``mask_generator.py``; ALGORITHMS.md §2.5).

    m* = argmin_m  l1 * |1 - m|_1 + tv * TV_beta(m) + softmax(f(Phi(x; m)))_y
    Phi(x; m) = M * x + (1 - M) * blur(x),      M = [blur](upsample(m))

``m`` is a small mask parameter (28x28 at 224) initialised at 0.5 and optimised with Adam
(lr 0.1), clamped to [0, 1] after each step; ``TV_beta(m) = sum (dx^2 + dy^2 + 1e-8)^(beta/2)``.
A *low* m marks a pixel that matters, so the map is ``1 - m`` at the mask's native resolution.

Defaults at 224 (``config="v2"``, paper-faithful, the ADV^2 revision; ``"v1"`` the earlier
``get_default_mask_config``):

| | v2 | v1 |
|---|---|---|
| mask | 28x28, mask blurred after upsampling (k 11, sigma 2) | 28x28 |
| blurred image | resized to 228, Gaussian k 21 (sigma 3.5) | Gaussian k 11, sigma 10 |
| jitter | random crop offset 0..3 px of the 228 image | none |
| l1 | 1e-4, sum over the mask | 1e-2, mean over the mask |
| tv, beta | 1e-2, 3 | 1e-4, 3 |
| iterations | 300 | 400 |

Scaling for small inputs (side < 112: CIFAR-10 32x32, Fashion-MNIST 28x28), a choice of ours:
a 28x28 mask at 32x32 would be finer than the image's content, and the 224 blur widths scaled by
32/224 (sigma 0.5) leave the class intact (cifar10-resnet20 keeps 79% accuracy on images blurred
with sigma 0.5, 33% at 1.0, 21% at 1.5, 20% at 2.0; 500 test images). So: mask side // 4
(8x8 at 32, 7x7 at 28); blurred image sigma 1.5 (v2) / 2.0 (v1); mask blur sigma 0.5 (v2); no
jitter (4 px at 224 is half a pixel at 32); the summed L1 weight scaled by (28 / side)^2 and the
TV weight by 28 / side (area and edge length of a 28x28 mask). Inputs of side >= 112 scale every
length by side / 224 (the table above at 224). Every value can be overridden.

Differentiable API for the bilevel MASK attack (ADV^2 ``rev1/mask_v2``)::

    state = mask.init_state(x)                             # m = 0.5, Adam moments 0, step 0
    state = mask.solve(x, target)                          # full optimisation, no graph
    state = mask.steps(x, target, state, 4)                # k more steps, x detached
    state = mask.steps(x_adv, target, state, 4, create_graph=True)   # unrolled, differentiable
    raw = mask.state_map(state)                            # (N, 1, s, s) map 1 - m (not min-max)

The optimiser is a hand-written, differentiable Adam (betas 0.9, 0.999, eps 1e-8; 1e-20 is
added under the square root so that double backward stays finite at v = 0). With
``create_graph=True`` each step's gradient keeps its graph, so ``state.m`` is a differentiable
function of x (through the gradient of the mask loss, which contains x - blur(x) directly).
``__call__(x, create_graph=True)`` runs ``iterations - unroll`` steps without a graph and the last
``unroll`` (default 4) with it. The whole batch is optimised at once (the loss is a sum over
samples, Adam is element-wise, jitter offsets are drawn once per step and shared), so a batch
gives the same maps as its samples one at a time. Seeded: each call uses its own generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..validation import check_choice, check_int, check_positive
from ._blur import gaussian_blur, opencv_sigma
from .base import Interpreter

_V = {  # values at 224x224
    "v2": {"mask_size": 28, "jitter": 4, "image_sigma": opencv_sigma(21), "image_ksize": 21,
           "mask_sigma": opencv_sigma(11), "mask_ksize": 11, "l1": 1e-4, "l1_reduction": "sum", "tv": 1e-2,
           "iterations": 300},
    "v1": {"mask_size": 28, "jitter": 0, "image_sigma": 10.0, "image_ksize": 11, "mask_sigma": 0.0,
           "mask_ksize": None, "l1": 1e-2, "l1_reduction": "mean", "tv": 1e-4, "iterations": 400},
}
_SMALL = {"v2": {"image_sigma": 1.5, "mask_sigma": 0.5}, "v1": {"image_sigma": 2.0, "mask_sigma": 0.0}}


def mask_defaults(config: str, side: int) -> dict:
    """The default hyperparameters of ``config`` for square-ish inputs of (smaller) side ``side``."""
    d = dict(_V[config])
    if side >= 112:
        s = side / 224
        if s != 1:
            d["mask_size"] = max(1, round(28 * s))
            d["jitter"] = round(d["jitter"] * s)
            d["image_sigma"] *= s
            d["image_ksize"] = None if config == "v2" else 2 * round(5 * s) + 1
            d["mask_sigma"] *= s
            d["mask_ksize"] = None
        return d
    d.update(_SMALL[config], mask_size=max(1, side // 4), jitter=0, image_ksize=None, mask_ksize=None)
    if d["l1_reduction"] == "sum":
        d["l1"] *= (28 / d["mask_size"]) ** 2
    d["tv"] *= 28 / d["mask_size"]
    return d


@dataclass
class MaskState:
    """The inner optimisation's state: mask ``m`` (N, 1, s, s) in [0, 1], Adam moments, step count
    and the generator of the jitter offsets."""

    m: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: int
    generator: torch.Generator

    def detach(self) -> MaskState:
        return MaskState(self.m.detach(), self.exp_avg.detach(), self.exp_avg_sq.detach(), self.step,
                         self.generator)


class MASK(Interpreter):
    name = "mask"
    stochastic = True

    def __init__(self, model: nn.Module, *, config: str = "v2", iterations: int | None = None,
                 lr: float = 0.1, l1: float | None = None, tv: float | None = None, tv_beta: float = 3.0,
                 mask_size: int | None = None, jitter: int | None = None, image_sigma: float | None = None,
                 mask_sigma: float | None = None, unroll: int = 4, seed: int = 0, **kwargs):
        super().__init__(model, **kwargs)
        self.config = check_choice("config", config, ("v1", "v2"))
        given = {"iterations": iterations, "l1": l1, "tv": tv, "mask_size": mask_size, "jitter": jitter,
                 "image_sigma": image_sigma, "mask_sigma": mask_sigma}
        self.overrides = {k: v for k, v in given.items() if v is not None}
        for k in ("iterations", "mask_size"):
            if k in self.overrides:
                check_int(k, self.overrides[k], minimum=1)
        if "jitter" in self.overrides:
            check_int("jitter", jitter)
        for k in ("l1", "tv", "image_sigma", "mask_sigma"):
            if k in self.overrides:
                check_positive(k, self.overrides[k], allow_zero=True)
        self.lr = check_positive("lr", lr)
        self.tv_beta = check_positive("tv_beta", tv_beta)
        self.unroll = check_int("unroll", unroll)
        self.seed = check_int("seed", seed)

    def params(self, x: torch.Tensor) -> dict:
        """The hyperparameters used for inputs shaped like ``x`` (defaults, then overrides)."""
        d = mask_defaults(self.config, min(x.shape[-2:]))
        d.update(self.overrides)
        return d

    # -- the differentiable pieces ---------------------------------------------------------------
    def init_state(self, x: torch.Tensor, *, seed: int | None = None) -> MaskState:
        """m = 0.5 everywhere, zero Adam moments, a fresh seeded generator for the jitter."""
        s = self.params(x)["mask_size"]
        m = torch.full((x.shape[0], 1, s, s), 0.5, device=x.device, dtype=x.dtype)
        gen = torch.Generator(device="cpu").manual_seed(self.seed if seed is None else seed)
        return MaskState(m, torch.zeros_like(m), torch.zeros_like(m), 0, gen)

    def blurred(self, x: torch.Tensor, p: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, blur(x)) at the composition size (side + jitter; resized when jitter > 0)."""
        p = p or self.params(x)
        j = p["jitter"]
        if j:
            x = F.interpolate(x, size=(x.shape[-2] + j, x.shape[-1] + j), mode="bilinear", align_corners=False)
        return x, gaussian_blur(x, p["image_sigma"], p["image_ksize"])

    def perturb(self, xs: torch.Tensor, xb: torch.Tensor, m: torch.Tensor, p: dict, offset=(0, 0)):
        """Phi(x; m) cropped back to the input size at ``offset`` (the jitter)."""
        big = F.interpolate(m, size=xs.shape[-2:], mode="bilinear", align_corners=False)
        if p["mask_sigma"] > 0:
            big = gaussian_blur(big, p["mask_sigma"], p["mask_ksize"])
        comp = xb + big * (xs - xb)
        j = p["jitter"]
        if j:
            dy, dx = offset
            comp = comp[..., dy:dy + xs.shape[-2] - j, dx:dx + xs.shape[-1] - j]
        return comp

    def loss(self, xs, xb, target, m, p, offset=(0, 0)) -> torch.Tensor:
        """The mask objective, summed over the batch (so each sample's gradient is its own)."""
        prob = F.softmax(self.model(self.perturb(xs, xb, m, p, offset)), 1).gather(1, target[:, None])[:, 0]
        area = (1 - m).abs().flatten(1)
        area = area.sum(1) if p["l1_reduction"] == "sum" else area.mean(1)
        dx = m[..., :-1, 1:] - m[..., :-1, :-1]
        dy = m[..., 1:, :-1] - m[..., :-1, :-1]
        tv = (dx * dx + dy * dy + 1e-8).pow(self.tv_beta / 2).flatten(1).sum(1)
        return (p["l1"] * area + p["tv"] * tv + prob).sum()

    def steps(self, x: torch.Tensor, target: torch.Tensor, state: MaskState, k: int, *,
              create_graph: bool = False) -> MaskState:
        """Run ``k`` Adam steps on the mask from ``state``. With ``create_graph=True`` the new state
        is a differentiable function of ``x`` (and of the incoming state); otherwise x is detached
        and the result carries no graph. ``target``: LongTensor(N) on x's device."""
        p = self.params(x)
        if not create_graph:
            x = x.detach()
            state = state.detach()
        with torch.enable_grad(), self._graph_context(create_graph):  # math attention kernel
            xs, xb = self.blurred(x, p)
            m, m1, v, t = state.m, state.exp_avg, state.exp_avg_sq, state.step
            for _ in range(k):
                if not m.requires_grad:
                    m = m.detach().requires_grad_()
                j = p["jitter"]
                offset = tuple(torch.randint(0, j, (2,), generator=state.generator).tolist()) if j else (0, 0)
                (g,) = torch.autograd.grad(self.loss(xs, xb, target, m, p, offset), m, create_graph=create_graph)
                t += 1
                m1 = 0.9 * m1 + 0.1 * g
                v = 0.999 * v + 0.001 * g * g
                denom = (v / (1 - 0.999 ** t) + 1e-20).sqrt() + 1e-8
                m = (m - self.lr * (m1 / (1 - 0.9 ** t)) / denom).clamp(0, 1)
                if not create_graph:
                    m, m1, v = m.detach(), m1.detach(), v.detach()
        return MaskState(m, m1, v, t, state.generator)

    def solve(self, x: torch.Tensor, target: torch.Tensor, *, iterations: int | None = None,
              seed: int | None = None) -> MaskState:
        """The full optimisation from ``init_state`` (no graph)."""
        k = self.params(x)["iterations"] if iterations is None else iterations
        return self.steps(x, target, self.init_state(x, seed=seed), k)

    @staticmethod
    def state_map(state: MaskState) -> torch.Tensor:
        """The raw map ``1 - m`` (N, 1, s, s); high where the mask keeps the image."""
        return 1 - state.m

    def compute_with_logits(self, x, target, *, create_graph):
        iters = self.params(x)["iterations"]
        unroll = min(self.unroll, iters) if create_graph else 0
        state = self.solve(x, target, iterations=iters - unroll)
        if unroll:
            state = self.steps(x, target, state, unroll, create_graph=True)
        return self.model(x), self.state_map(state)
