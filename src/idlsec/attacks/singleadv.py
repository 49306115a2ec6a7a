"""SingleADV: one universal perturbation per (source class, target class) that sends the source
class to the target class, keeps the interpreter's maps close to the benign maps, and leaves the
other classes alone (Abdukhamidov, Abuhamad, Thiruvathukal, Kim, Abuhmed, IEEE TIFS 19:5985-5998,
2024; code InfoLab-SKKU/SingleClassADV; ALGORITHMS.md §5).

    uatk = SingleADV(model, CAM(model), source=3, target=9, norm="linf", eps=8/255)
    delta = uatk.fit(x_source, others=x_other)     # (C, H, W)
    x_adv = uatk(x)                                # clip(x + delta), deterministic

Objective, for one batch of source images x and other-class images x' with labels y':

    mean_x [ ℓ_t(f(x + δ)) + λ·mean_px (g_t(x + δ) − g(x))² ]  +  w·ρ·mean_x' [ ℓ_y'(f(x' + δ)) ]

``g_t`` is the map the system shows when it predicts t (the attack's goal) and ``g(x)`` the
benign map of its own prediction; ρ = mean per-image gradient norm of the source term over that
of the inhibition term (the released code's ``normRatioOfSourceClassToOtherClass``), so that the
other classes weigh as much as the source class whatever their loss scale; ``w`` is the
inhibition weight. The update is the released code's Adam-normalised step: the bias-corrected
Adam direction of the mean per-image gradient, scaled so that its largest entry is
``step_size`` (one intensity level), then the projection onto the L∞ or L2 ball of radius eps.

Losses: ``loss="margin"`` (default) is the C&W hinge ``max(max_{j≠t} z_j − z_t, −κ)`` on the
source images and ``max(max_{j≠y'} z_j − z_y', −κ)`` on the inhibition images, so images that
are already fooled (or already safe) stop pulling δ and the budget goes to the undecided ones;
``loss="ce"`` is the released code's (label-smoothed) cross-entropy on both.

Polishing (``polish_steps`` > 0, joint schedule with inhibition images): once the training fooling
target is met, keep optimising for up to ``polish_steps`` iterations and return the evaluated δ
that meets the target with the lowest unintended-fooling rate on the inhibition images (training
data only), instead of stopping at the first δ that meets it.

Adaptive inhibition (``adapt_inhibition`` = a > 0): at every evaluation the inhibition weight is
multiplied by 1 + a while the training fooling rate is at or above the target and divided by it
otherwise, so it settles near the largest weight that keeps the target (use with ``polish_steps``).

Schedule: the released code runs the source attack until the training fooling rate reaches 0.8
and then an inhibition phase of 100 iterations with other-class images added to every batch.
``inhibition_start`` (a fraction of ``iterations``, default 0 = joint from the first iteration)
sets when the inhibition batch joins; ``inhibition_start=None`` reproduces the released
two-phase schedule (phase 2 = ``inhibition_steps`` iterations after the fooling target is met).

Defaults: λ = 5, batch 64 (+64 inhibition images), Adam β = (0.9, 0.999), 1000 iterations,
stop at a training fooling rate of 0.8 (checked every ``eval_every`` iterations), step 1/255,
ε = 8/255 (L∞) or, for L2, the released η = 4500 (0..255 units, 224×224×3) rescaled to the
same per-pixel RMS for the image size at hand (2.52 for 32×32×3).
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..interpreters.base import Interpreter, eval_mode
from ..metrics.losses import exact_cross_entropy
from ..validation import check_choice, check_images, check_int, check_labels, check_positive

# the released L2 budget: η = 4500 in 0..255 units on 224×224×3 images, as a per-pixel RMS in [0, 1]
PAPER_L2_RMS = 4500 / 255 / math.sqrt(224 * 224 * 3)


def margin_loss(logits: torch.Tensor, cls: torch.Tensor, kappa: float) -> torch.Tensor:
    """Per-sample C&W hinge: max(max_{j≠cls} z_j − z_cls, −κ); < 0 iff cls wins by a margin."""
    z_cls = logits.gather(1, cls.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, cls.view(-1, 1), float("-inf")).amax(1)
    return (other - z_cls).clamp_min(-kappa)


class SingleADV:
    """Universal (source → target) perturbation with benign-looking maps; see the module docstring."""

    name = "singleadv"

    def __init__(self, model: nn.Module, interpreter: Interpreter, *, source: int, target: int,
                 norm: str = "linf", eps: float | None = None, lam: float = 5.0, loss: str = "margin",
                 kappa: float = 10.0, inhibition: float = 1.0, inhibition_start: float | None = 0.0,
                 inhibition_steps: int = 100, polish_steps: int = 0, adapt_inhibition: float = 0.0, iterations: int = 1000, batch_size: int = 64,
                 inhibition_batch_size: int = 64, step_size: float = 1 / 255,
                 betas: tuple[float, float] = (0.9, 0.999), target_fooling: float = 0.8,
                 eval_every: int = 10, seed: int = 0, progress: bool = False, callback=None):
        if interpreter is None:
            raise ConfigError("SingleADV attacks an interpreter; pass one (e.g. CAM(model))")
        self.model, self.interpreter = model, interpreter
        self.source, self.target = source, target
        self.norm, self.eps, self.lam, self.loss, self.kappa = norm, eps, lam, loss, kappa
        self.inhibition, self.inhibition_start, self.inhibition_steps = inhibition, inhibition_start, inhibition_steps
        self.polish_steps, self.adapt_inhibition = polish_steps, adapt_inhibition
        self.iterations, self.batch_size, self.inhibition_batch_size = iterations, batch_size, inhibition_batch_size
        self.step_size, self.betas, self.target_fooling = step_size, betas, target_fooling
        self.eval_every, self.seed, self.progress, self.callback = eval_every, seed, progress, callback
        card = getattr(model, "card", None)
        self.num_classes = card.num_classes if card is not None else None
        self.delta: torch.Tensor | None = None
        self.fooling_rate: float | None = None
        self.converged = False
        self.history: list[dict] = []
        self.seconds = 0.0
        self.best_iteration: int | None = None
        self._check_params()

    # --- parameters -------------------------------------------------------------------------
    def _check_params(self) -> None:
        for name in ("source", "target"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (
                    self.num_classes is not None and v >= self.num_classes):
                limit = f"[0, {self.num_classes})" if self.num_classes else ">= 0"
                raise ConfigError(f"{name} must be a class index in {limit}, got {v!r}")
        if self.source == self.target:
            raise ConfigError(f"source and target must differ, both are {self.source}")
        check_choice("norm", self.norm, ("linf", "l2"))
        if self.eps is not None:
            check_positive("eps", self.eps, upper=1.0 if self.norm == "linf" else None)
        check_positive("lam", self.lam, allow_zero=True)
        check_choice("loss", self.loss, ("margin", "ce"))
        check_positive("kappa", self.kappa, allow_zero=True)
        check_positive("inhibition", self.inhibition, allow_zero=True)
        if self.inhibition_start is not None:
            check_positive("inhibition_start", self.inhibition_start, allow_zero=True, upper=1.0)
        check_int("inhibition_steps", self.inhibition_steps)
        check_int("polish_steps", self.polish_steps)
        check_positive("adapt_inhibition", self.adapt_inhibition, allow_zero=True)
        check_int("iterations", self.iterations, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("inhibition_batch_size", self.inhibition_batch_size, minimum=1)
        check_positive("step_size", self.step_size, upper=1.0)
        if (not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2
                or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        check_positive("target_fooling", self.target_fooling, allow_zero=True, upper=1.0)
        check_int("eval_every", self.eval_every, minimum=1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    def get_params(self) -> dict:
        keys = ("source", "target", "norm", "eps", "lam", "loss", "kappa", "inhibition", "inhibition_start",
                "inhibition_steps", "polish_steps", "adapt_inhibition", "iterations", "batch_size", "inhibition_batch_size", "step_size", "betas",
                "target_fooling", "eval_every", "seed")
        return {k: getattr(self, k) for k in keys}

    def set_params(self, **kwargs) -> SingleADV:
        unknown = set(kwargs) - set(self.get_params())
        if unknown:
            raise ConfigError(f"singleadv has no parameter(s) {sorted(unknown)}; valid: {list(self.get_params())}")
        for k, v in kwargs.items():
            setattr(self, k, v)
        self._check_params()
        return self

    def __repr__(self) -> str:
        return f"SingleADV({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def budget(self, shape) -> float:
        """The radius of the ball for images of ``shape`` (C, H, W): eps, or the L2 default."""
        if self.eps is not None:
            return float(self.eps)
        if self.norm == "linf":
            return 8 / 255
        return PAPER_L2_RMS * math.sqrt(math.prod(shape))

    def project(self, delta: torch.Tensor, eps: float) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-eps, eps)
        return delta * (eps / delta.norm().clamp_min(1e-12)).clamp(max=1.0)

    # --- applying ---------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """clip(x + delta, 0, 1); needs ``fit`` (or ``delta`` set) first."""
        return self.apply(x, self.delta)

    @staticmethod
    def apply(x: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
        if delta is None:
            raise ConfigError("SingleADV has no perturbation yet: call fit(images) first or set .delta")
        check_images(x)
        if tuple(x.shape[1:]) != tuple(delta.shape):
            raise InputError(f"x must be images of shape (N, {', '.join(map(str, delta.shape))}) "
                             f"to take this perturbation, got {tuple(x.shape)}")
        return (x.detach() + delta.to(x.device, x.dtype)).clamp(0, 1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, delta: torch.Tensor | None = None, batch: int = 500) -> torch.Tensor:
        """argmax f(clip(x + delta)) in batches (delta=None: the benign predictions)."""
        out = []
        for b in range(0, x.shape[0], batch):
            xb = x[b:b + batch]
            if delta is not None:
                xb = (xb + delta).clamp(0, 1)
            out.append(self.model(xb).argmax(1))
        return torch.cat(out)

    # --- fitting ----------------------------------------------------------------------------
    def fit(self, images: torch.Tensor, others: torch.Tensor | None = None,
            other_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Fit delta on source-class ``images`` (N, C, H, W); ``others`` are other-class images for
        the inhibition term, with ``other_labels`` (default: the model's benign predictions, so
        that "unintended fooling" means a change of the label the system shows)."""
        self._check_params()
        check_images(images, name="images")
        if others is not None:
            check_images(others, name="others")
            if others.shape[1:] != images.shape[1:]:
                raise InputError(f"others must have the images' shape {tuple(images.shape[1:])}, "
                                 f"got {tuple(others.shape[1:])}")
            if other_labels is not None:
                other_labels = check_labels(other_labels, others.shape[0], num_classes=self.num_classes,
                                            name="other_labels").to(others.device)
        elif other_labels is not None:
            raise InputError("other_labels given without others")
        start = time.perf_counter()
        with eval_mode(self.model):
            delta = self._fit(images.detach(), None if others is None else others.detach(), other_labels)
        self.seconds = time.perf_counter() - start
        self.delta = delta
        return delta

    def _fit(self, x: torch.Tensor, xo: torch.Tensor | None, yo: torch.Tensor | None) -> torch.Tensor:
        device, dtype = x.device, x.dtype
        eps = self.budget(x.shape[1:])
        gen = torch.Generator().manual_seed(self.seed)
        n = x.shape[0]
        benign_maps = torch.cat([self.interpreter(x[b:b + 256]) for b in range(0, n, 256)])
        if xo is not None and yo is None:
            yo = self.predict(xo)
        use_inhibition = xo is not None and self.inhibition > 0
        tgt = torch.full((min(self.batch_size, n),), self.target, dtype=torch.long, device=device)

        # δ keeps the image's (C, H, W) layout: the released code's (2, 1, 0) transpose swaps H and W
        delta = torch.zeros(x.shape[1:], device=device, dtype=dtype)
        m = torch.zeros_like(delta)
        v = torch.zeros_like(delta)
        b1, b2 = self.betas
        self.history, self.converged, self.fooling_rate, self.best_iteration = [], False, None, None
        order, pos = torch.randperm(n, generator=gen), 0
        two_phase = self.inhibition_start is None
        inhibit_from = None if two_phase else round(self.inhibition_start * self.iterations)
        phase2_end = None  # two-phase schedule: the iteration at which the inhibition phase ends
        polish_end, best = None, None  # joint schedule with polish_steps: (unintended, it, delta)
        self._w = float(self.inhibition)  # the inhibition weight in use (adapted when adapt_inhibition > 0)
        total, it, losses = self.iterations, 0, []
        while it < total:
            it += 1
            if pos + self.batch_size > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos:pos + self.batch_size].to(device)
            pos += self.batch_size
            inhibit = use_inhibition and (phase2_end is not None if two_phase else it > inhibit_from)
            xo_b, yo_b = self._other_batch(xo, yo, gen) if inhibit else (None, None)
            grad, loss = self._gradient(x[idx], benign_maps[idx], tgt[:len(idx)], xo_b, yo_b, delta)
            losses.append(loss)
            m.mul_(b1).add_(grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            u = (m / (1 - b1 ** it)) / (v / (1 - b2 ** it)).sqrt().clamp_min(1e-12)
            u = u / u.abs().amax().clamp_min(1e-12)
            # descend the intended targeted loss on x + δ: the released code's x − δ, δ += ∇ ascends it
            delta = self.project(delta - self.step_size * u, eps)
            if self.callback is not None:
                self.callback(it, total)
            if it % self.eval_every and it != total:
                continue
            rate = float((self.predict(x, delta) == self.target).float().mean())
            record = {"iteration": it, "loss": float(torch.stack(losses).mean()), "fooling_rate": rate,
                      "inhibition": bool(inhibit), "inhibition_weight": self._w if inhibit else 0.0}
            if inhibit and self.adapt_inhibition > 0:  # the most inhibition that keeps the fooling target
                self._w *= (1 + self.adapt_inhibition) if rate >= self.target_fooling else 1 / (1 + self.adapt_inhibition)
            losses = []
            if use_inhibition:
                record["unintended_rate"] = float((self.predict(xo, delta) != yo).float().mean())
            self.history.append(record)
            self.fooling_rate = rate
            if self.progress:
                print(f"singleadv {record}")
            if two_phase and use_inhibition:
                if phase2_end is None and (rate >= self.target_fooling or it == total):
                    phase2_end = total = it + self.inhibition_steps  # the released inhibition phase
                self.converged = phase2_end is not None and it >= phase2_end and rate >= self.target_fooling
            elif rate >= self.target_fooling and (not use_inhibition or it > inhibit_from):
                self.converged = True
                if not use_inhibition or self.polish_steps == 0:
                    break
                if polish_end is None:
                    polish_end = total = min(total, it + self.polish_steps)
                if best is None or record["unintended_rate"] <= best[0]:
                    best = (record["unintended_rate"], it, delta.detach().clone())
        if best is not None:  # the polished δ meeting the target that spares the inhibition images best
            delta = best[2]
            self.fooling_rate = next(h["fooling_rate"] for h in self.history if h["iteration"] == best[1])
            self.best_iteration = best[1]
        return delta.detach()

    def _other_batch(self, xo, yo, gen):
        idx = torch.randint(0, xo.shape[0], (self.inhibition_batch_size,), generator=gen).to(xo.device)
        return xo[idx], yo[idx]

    def _cls_loss(self, logits, cls):
        if self.loss == "margin":
            return margin_loss(logits, cls, self.kappa)
        return exact_cross_entropy(logits, cls, reduction="none")

    def _gradient(self, xs, ms, tgt, xo, yo, delta):
        """Mean per-image gradient of the source term plus the ρ-rescaled inhibition term."""
        with torch.enable_grad():
            xa = (xs + delta).clamp(0, 1).requires_grad_(True)
            logits, maps = self.interpreter.logits_and_maps(xa, tgt, create_graph=True)
            per_image = self._cls_loss(logits, tgt) + self.lam * (maps - ms).pow(2).flatten(1).mean(1)
            (g,) = torch.autograd.grad(per_image.sum(), xa)
            loss = per_image.detach().mean()
            grad = g.mean(0)
            if xo is not None:
                xb = (xo + delta).clamp(0, 1).requires_grad_(True)
                other = self._cls_loss(self.model(xb), yo)
                (go,) = torch.autograd.grad(other.sum(), xb)
                norm_s = g.flatten(1).norm(dim=1).mean()
                norm_o = go.flatten(1).norm(dim=1).mean()
                rho = norm_s / norm_o.clamp_min(1e-12)
                grad = grad + self._w * rho * go.mean(0)
                loss = loss + self._w * other.detach().mean()
        return grad, loss
