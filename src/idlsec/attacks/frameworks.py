"""The optimisation frameworks of ADV^2 / AdvEdge / AdvEdge+ (``framework="pgd" | "cw" | "stadv"``;
AdvEdge journal version, IEEE TDSC 2024; ALGORITHMS.md §4.4, the released ``C&W_*`` and StAdv
notebooks). Each one says how x̂ is parametrised, how a step is taken and which distance term
joins the loss; the two-stage schedule (warm start, then the joint loss with c ramped) and the
interpretation term are the attack's own (:class:`idlsec.attacks.adv2.ADV2`).

- ``pgd``: x̂ itself, sign steps of α weighted by the edge map (AdvEdge), projected on the L∞
  ball of radius eps ∩ [0, 1]; no distance term. Stage-1 loss: the interpreter's (ADV^2 / AdvEdge).
- ``cw`` (Carlini & Wagner 2017): x̂ = ½(tanh w + 1), Adam (lr 0.01, amsgrad) on w.
  Stage 1: ‖x̂ − x‖²₂ + cw_warmup_weight · max(max_{j≠t} z_j − z_t, −κ) (1e-4, κ = 0);
  stage 2: 2·ℓ_prd + ‖x̂ − x‖²₂ + c·ℓ_int.
- ``stadv`` (Xiao et al., ICLR 2018): x̂ = bilinear resampling of x along a per-pixel flow field
  f (N, 2, H, W) in pixels (``grid_sample``, border padding), initialised to 0.2·(U − 0.5)
  (seeded), Adam (lr 0.01). Stage 1: CE + τ·L_flow; stage 2: 2·CE + τ·L_flow + c·ℓ_int,
  τ = 5e-4, L_flow the flow smoothness of :func:`idlsec.metrics.flow.flow_smoothness`.

Edge weighting under C&W and StAdv, as in the notebooks: the perturbation itself is masked,
x̂ = x + (x_raw − x) ⊙ W (W = E for AdvEdge, 1[E > θ] for AdvEdge+).

What is bounded: following the authors' code, C&W and StAdv enforce **no** L∞ bound (the
notebooks read eps = 0.031 and never use it); C&W is L2-penalised, StAdv is flow-penalised, and
both stay in [0, 1] by construction. ``eps`` is ignored by them; records report L2, L∞ and (StAdv)
the flow's magnitude and smoothness, so the cost is measured rather than clipped away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..metrics.flow import flow_smoothness
from . import _idls

FRAMEWORKS = ("pgd", "cw", "stadv")
# the notebooks' step counts (warm start, joint) when the user gives none; PGD keeps the profile's
STEPS = {"cw": (300, 1500), "stadv": (200, 600)}


class PGDFramework:
    """x̂ itself; sign steps; L∞-projected (the ADV^2 / AdvEdge code)."""

    name = "pgd"
    bounded = True
    pred_weight = 1.0

    def __init__(self, attack):
        self.attack = attack

    def init(self, x, gen):
        return x.clone()

    def image(self, p, x, weights):
        return p

    def penalty(self, p, x, x_adv):
        return None

    def warmup_loss(self, logits, y, s, p, x, x_adv):
        return self.attack._warmup_loss(logits, y, s)

    def begin(self, p):
        pass

    def step(self, p, grad, x, weights):
        return self.attack._step(p, x, grad, weights)

    def per_sample(self, p):
        return {}


class _AdamFramework(PGDFramework):
    """Shared by C&W and StAdv: Adam on a parameter tensor, one optimiser for both stages; Adam is
    elementwise, so each image's trajectory is independent of its batch."""

    bounded = False
    pred_weight = 2.0
    amsgrad = False

    def begin(self, p):
        self.param = p  # the optimiser's tensor; the loops work on detached views of it
        self.opt = torch.optim.Adam([p], lr=self.attack.lr, amsgrad=self.amsgrad)

    def step(self, p, grad, x, weights):
        self.param.grad = grad.detach()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return self.param.detach()

    @staticmethod
    def masked(raw, x, weights):
        return raw if weights is None else x + (raw - x) * weights


class CWFramework(_AdamFramework):
    name = "cw"
    amsgrad = True

    def init(self, x, gen):
        return torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach()

    def image(self, p, x, weights):
        return self.masked((torch.tanh(p) + 1) / 2, x, weights)

    def penalty(self, p, x, x_adv):
        return (x_adv - x).flatten(1).pow(2).sum(1)

    def warmup_loss(self, logits, y, s, p, x, x_adv):
        a = self.attack
        margin = a._signed(_idls.cw_margin)(logits, y).clamp(min=-a.cw_kappa)
        return a.cw_warmup_weight * margin


class StAdvFramework(_AdamFramework):
    name = "stadv"

    def init(self, x, gen):
        n, _, h, w = x.shape
        return 0.2 * (torch.rand(n, 2, h, w, generator=gen, device=gen.device, dtype=x.dtype).to(x.device) - 0.5)

    def image(self, p, x, weights):
        return self.masked(warp(x, p), x, weights)

    def penalty(self, p, x, x_adv):
        return self.attack.stadv_tau * flow_smoothness(p)

    def warmup_loss(self, logits, y, s, p, x, x_adv):
        return self.attack._signed(_idls.ce)(logits, y)

    def per_sample(self, p):
        from ..metrics.flow import flow_magnitude

        mag = flow_magnitude(p.detach())
        return {"flow_mean": mag.flatten(1).mean(1), "flow_max": mag.flatten(1).amax(1),
                "flow_smoothness": flow_smoothness(p.detach())}


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of x (N, C, H, W) at p + flow(p): flow (N, 2, H, W) in pixels,
    channel 0 horizontal (along W), 1 vertical; border padding, differentiable in both."""
    n, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    scale = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=x.device, dtype=x.dtype)
    grid = torch.stack([gx, gy], -1).unsqueeze(0) + flow.permute(0, 2, 3, 1) * scale
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def make_framework(attack):
    return {"pgd": PGDFramework, "cw": CWFramework, "stadv": StAdvFramework}[attack.framework](attack)


__all__ = ["FRAMEWORKS", "STEPS", "make_framework", "warp"]
