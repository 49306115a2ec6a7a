"""ADV^2 (Zhang, Wang, Shen, Ji, Luo, Wang: "Interpretable Deep Learning under Fire", USENIX
Security 2020): targeted PGD whose examples keep the interpretation close to a target map.

    min_x̂  ℓ_prd(f(x̂), c_t) + c · ℓ_int(g(x̂; f), m_t)   s.t. ‖x̂ − x‖∞ ≤ eps, x̂ ∈ [0, 1]

Two stages, as in the authors' code (ALGORITHMS.md §3.3): a warm start of ``warmup_steps`` sign
steps on the prediction loss alone, then ``steps`` sign steps on the joint loss with c ramped.
The target map m_t is the benign map (the interpreter's map of x for its prediction) unless
``run(x, y, target_map=...)`` gives another. Per interpreter (defaults in ``_idls.PROFILES``):

- CAM, Grad-CAM: CE + c·mean-squared map distance, 300 + 1000 steps, c ramped 5 → 10.
- Grad: label-smoothed CE (0.95) + c·summed squared distance (rescaled to 56x56 maps), the map
  built through the smooth-ReLU surrogate (second-order gradients), 300 + 704 steps with the
  staircase c = 0.001·(1, 4, 10, 50); every 10 steps the example is kept if p(target) > 0.8 and
  its true-ReLU map is the closest so far.
- RTS: as CAM, plus 0.1·CE of the RTS encoder's own classification head.
- MASK: the bilevel attack: 400 sign steps on the C&W margin, then 1000 steps that each take an
  L2-normalised margin step, 4 unrolled mask steps without and 4 with backprop, and the largest
  step (bisection) along the mask-distance gradient that keeps the margin below −10; the mask
  is re-solved in full every 50 steps. L2 step sizes (0.05, 0.08) are the paper's at 224x224x3,
  rescaled by sqrt(d / 150528). Deviations: the margin is floored at −12 (``mask_confidence``;
  unbounded, CIFAR-10 margins reach −70, the softmax saturates, the MASK class term and hence the
  bilevel gradient vanish); the mask is solved once after the warm start and re-solved on the
  example itself, not its uint8 quantisation.

Defaults: eps = 8/255, alpha = 1/255 (the papers' 0.031 and 1/255; the same in [0, 1] units for
CIFAR-10 and ImageNet), targeted=True (the attack is targeted by design: y holds target labels).
Every interpreter, not only Grad, keeps per image the successful example with the closest map
(``select="best"``; free for CAM/Grad-CAM/RTS, whose step's own forward pass gives the map;
``select="last"`` returns the final iterate as the authors' CAM/RTS code does). ADV^2's Grad
warm start skips the [0, 1] clamp (a bug); we always clamp. See docs/attacks.md.

Frameworks (AdvEdge journal version, ALGORITHMS.md §4.4; :mod:`idlsec.attacks.frameworks`,
docs/frameworks.md): ``framework="pgd"`` (default, the above), ``"cw"`` (x̂ = ½(tanh w + 1), Adam
``lr`` = 0.01 amsgrad, L2 cost, stage-1 margin weight ``cw_warmup_weight`` = 1e-4 with
``cw_kappa`` = 0, 300 + 1500 steps) or ``"stadv"`` (a per-pixel flow field warping x, Adam
``lr`` = 0.01, smoothness weight ``stadv_tau`` = 5e-4, 200 + 600 steps); stage 2 weighs the
prediction loss by 2 in both. C&W and StAdv are not L∞-bounded (as the authors' code): ``eps``
is ignored, only [0, 1] is checked; records report L2, L∞ and StAdv's flow. MASK is PGD-only.

``compile=True`` (default False): the steps' model passes run compiled, the interpreter on its
compiled path (CAM, Grad-CAM, Grad's first-order passes; :mod:`idlsec.compiling`).
``cuda_graph=True`` (default False): on CUDA the warm-start and joint steps (forward, loss,
backward to the input, step, projection) are replayed from CUDA graphs (:mod:`idlsec.cuda_graphs`;
PGD framework only, not MASK; the best-example bookkeeping stays outside the graph).
``amp="bf16"|"fp16"`` (default None): the steps' forward passes under autocast, losses and maps in
float32 (:mod:`idlsec.precision`; MASK's bilevel inner steps stay float32).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..interpreters.base import minmax
from ..precision import f32
from ..validation import check_choice, check_int, check_positive
from . import _idls, frameworks
from .base import Attack, project_linf
from .registry import register_attack


@register_attack
class ADV2(Attack):
    name = "adv2"
    needs_interpreter = True

    def __init__(self, model, interpreter=None, *, eps=8 / 255, alpha=1 / 255, warmup_steps=None, steps=None,
                 c=None, schedule=None, select="best", select_confidence=None, check_every=None,
                 encoder_weight=None, mask_inner_steps=4, mask_resolve_every=50, mask_step=0.05,
                 mask_max_step=0.08, mask_margin=10.0, mask_confidence=12.0, mask_bisection=10,
                 framework="pgd", lr=0.01, cw_kappa=0.0, cw_warmup_weight=1e-4, stadv_tau=5e-4,
                 targeted=True, seed=0, compile=False, cuda_graph=False, amp=None,  # noqa: A002
                 progress=False, callback=None):
        super().__init__(model, interpreter, eps=eps, targeted=targeted, seed=seed, progress=progress,
                         callback=callback)
        self.compile, self.cuda_graph, self.amp = compile, cuda_graph, amp
        self.alpha, self.warmup_steps, self.steps, self.c, self.schedule = alpha, warmup_steps, steps, c, schedule
        self.select, self.select_confidence, self.check_every = select, select_confidence, check_every
        self.encoder_weight = encoder_weight
        self.mask_inner_steps, self.mask_resolve_every, self.mask_step = mask_inner_steps, mask_resolve_every, mask_step
        self.mask_max_step, self.mask_margin, self.mask_bisection = mask_max_step, mask_margin, mask_bisection
        self.mask_confidence = mask_confidence
        self.framework, self.lr, self.cw_kappa = framework, lr, cw_kappa
        self.cw_warmup_weight, self.stadv_tau = cw_warmup_weight, stadv_tau
        self._check_params()

    # --- parameters ---------------------------------------------------------------------------
    def _check_params(self):
        super()._check_params()
        check_positive("alpha", self.alpha, upper=1.0)
        for name in ("warmup_steps", "steps", "check_every"):
            value = getattr(self, name)
            if value is not None:
                check_int(name, value, minimum=1 if name == "check_every" else 0)
        for name in ("c", "encoder_weight"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name), allow_zero=True)
        if self.schedule is not None:
            check_choice("schedule", self.schedule, ("constant", "linear", "staircase"))
        check_choice("select", self.select, ("best", "last"))
        if self.select_confidence is not None:
            check_positive("select_confidence", self.select_confidence, allow_zero=True, upper=1.0)
        check_int("mask_inner_steps", self.mask_inner_steps, minimum=1)
        check_int("mask_resolve_every", self.mask_resolve_every, minimum=1)
        check_int("mask_bisection", self.mask_bisection, minimum=1)
        check_positive("mask_step", self.mask_step)
        check_positive("mask_max_step", self.mask_max_step)
        check_positive("mask_margin", self.mask_margin, allow_zero=True)
        if self.mask_confidence is not None:
            check_positive("mask_confidence", self.mask_confidence, allow_zero=True)
            if self.mask_confidence <= self.mask_margin:
                raise ConfigError(f"mask_confidence ({self.mask_confidence}) must exceed mask_margin "
                                  f"({self.mask_margin}): the bisection keeps the margin below -mask_margin")
        check_choice("framework", self.framework, frameworks.FRAMEWORKS)
        check_positive("lr", self.lr)
        for name in ("cw_kappa", "cw_warmup_weight", "stadv_tau"):
            check_positive(name, getattr(self, name), allow_zero=True)
        if self.interpreter is not None:
            self.check_interpreter_class(type(self.interpreter))
            if self.framework != "pgd" and self._is_mask():
                raise ConfigError(f"framework={self.framework!r} is not available with MASK (its bilevel "
                                  f"attack is PGD-only); use framework='pgd'")

    @classmethod
    def check_interpreter_class(cls, interpreter_cls) -> None:
        """The interpreter must be differentiable (MASK excepted: its bilevel attack unrolls the
        mask's own steps) and declare its ADV^2 profile (:func:`_idls.profile_for`)."""
        super().check_interpreter_class(interpreter_cls)
        if interpreter_cls is None:
            return
        name = getattr(interpreter_cls, "name", interpreter_cls.__name__)
        if not getattr(interpreter_cls, "differentiable", True) and name != "mask":
            raise ConfigError(f"{cls.name} needs a differentiable interpreter; {name} is not")
        _idls.profile_for(interpreter_cls)

    def _settings(self) -> _idls.Profile:
        """The interpreter's profile with the user's explicit values on top."""
        prof = _idls.profile_for(self.interpreter)
        fw = dict(zip(("warmup_steps", "steps"), frameworks.STEPS.get(self.framework, ())))
        over = {k: getattr(self, k) for k in ("warmup_steps", "steps", "c", "schedule", "select_confidence",
                                              "check_every", "encoder_weight") if getattr(self, k) is not None}
        return _idls.Profile(**{**prof.__dict__, **fw, **over})

    def _is_mask(self) -> bool:
        return getattr(self.interpreter, "name", None) == "mask"

    # --- hooks (AdvEdge overrides these) ---------------------------------------------------------
    def _edge_weights(self, x: torch.Tensor, settings) -> torch.Tensor | None:
        """Per-pixel step weights (N, 1, H, W), or None for plain sign steps."""
        return None

    def _joint_weights(self, weights):
        """The weights used in the joint stage (AdvEdge: only with edge_stages="both")."""
        return weights

    def _warmup_loss(self, logits, y, settings):
        return self._mask_margin_loss(logits, y) if self._is_mask() else self._signed(_idls.ce)(logits, y)

    def _mask_margin_loss(self, logits, y):
        """MASK's prediction loss: the C&W margin, floored at −mask_confidence (None: unbounded)."""
        loss = self._signed(_idls.cw_margin)(logits, y)
        return loss if self.mask_confidence is None else loss.clamp(min=-self.mask_confidence)

    def _joint_prediction_loss(self, logits, y, step, total, gen, settings):
        if settings.surrogate:  # ADV^2 Grad: label smoothing 0.95 on the target
            return self._signed(_idls.smooth_ce)(logits, y, 0.95)
        return self._signed(_idls.ce)(logits, y)

    def _signed(self, loss):
        return loss if self.targeted else _idls.untargeted(loss)

    # --- the attack ------------------------------------------------------------------------------
    def _run(self, x, y, target_map):
        s = self._settings()
        gen = self._generator(x.device)
        weights = self._edge_weights(x, s)
        if weights is not None:
            weights = weights.to(x.dtype).expand(-1, x.shape[1], -1, -1)
        total = s.warmup_steps + s.steps
        tick, finish = self._ticker(total)
        history: list[torch.Tensor] = []
        fw = frameworks.make_framework(self)
        p = fw.init(x, gen)
        fw.begin(p)
        x_adv, p = self._warmup(x, y, s, fw, p, weights, tick, history)
        warm_pred = None
        if s.warmup_steps:
            with torch.no_grad():
                warm_pred = self.model(x_adv).argmax(1)
        if self._is_mask():
            x_adv, per_sample = self._joint_mask(x, x_adv, y, target_map, s, self._joint_weights(weights), gen,
                                                 tick, history)
        else:
            x_adv, per_sample = self._joint(x, p, y, target_map, s, self._joint_weights(weights), gen,
                                            tick, history, fw)
        finish()
        if warm_pred is not None:
            per_sample["warmup_success"] = ((warm_pred == y) if self.targeted else (warm_pred != y)).float()
        info = {"steps": total, "loss_history": torch.stack(history).tolist() if history else [],
                "warmup_steps": s.warmup_steps, "per_sample": per_sample}
        if weights is not None:
            info["edge_weights"] = weights[:, :1]
        return x_adv, info

    def _ticker(self, total):
        it = iter(self._steps(total))
        return (lambda: next(it, None)), (lambda: [None for _ in it])

    def _step(self, x_adv, x, grad, weights):
        step = grad.sign() if weights is None else weights * grad.sign()
        return project_linf(x_adv.detach() - self.alpha * step, x, self.eps)

    def _warmup(self, x, y, s, fw, p, weights, tick, history):
        """Stage 1 on the framework's parameter p: (x_adv, p)."""
        step = self._stepper("warmup", lambda p, x, y, w: self._warmup_step(p, x, y, w, s, fw), s,
                             blocker=self._graph_blocker())
        for _ in range(s.warmup_steps):
            tick()
            p, loss = step(p, x, y, weights)
            history.append(loss)
        with torch.no_grad():
            return fw.image(p, x, weights).detach(), p

    def _warmup_step(self, p, x, y, weights, s, fw):
        """One stage-1 step: (the next p, the mean loss at this one)."""
        p = p.detach().requires_grad_(True)
        x_adv = fw.image(p, x, weights)
        with self._autocast(x_adv):
            logits = self.model(x_adv)
        loss = fw.warmup_loss(f32(logits), y, s, p, x, x_adv)
        pen = fw.penalty(p, x, x_adv)
        if pen is not None:
            loss = loss + pen
        (grad,) = torch.autograd.grad(loss.sum(), p)
        return fw.step(p, grad, x, weights), loss.detach().mean()

    def _graph_blocker(self) -> str | None:
        """Why this attack's steps cannot be captured in a CUDA graph (None: they can)."""
        if self.framework != "pgd":
            return f"framework={self.framework!r} (its Adam state is updated outside the step)"
        if self._is_mask():
            return "MASK (its bilevel step solves and bisects with data-dependent control flow)"
        return None

    def _interpret(self, x_adv, cls, s, *, create_graph=True):
        """(logits, maps, extra per-sample loss) from one forward pass where the method allows;
        under ``amp`` the passes run under autocast, the logits and maps come back float32."""
        interp = self.interpreter
        with self._autocast(x_adv):
            if s.encoder_weight and hasattr(interp, "logits_encoder_and_maps"):
                logits, enc_logits, maps = interp.logits_encoder_and_maps(x_adv, cls)
            else:
                enc_logits = None
                logits, maps = interp.logits_and_maps(x_adv, cls, create_graph=create_graph)
        logits, maps = f32(logits), f32(maps)
        if enc_logits is None:
            return logits, maps, None
        return logits, maps, s.encoder_weight * self._signed(_idls.ce)(f32(enc_logits), cls)

    def _success(self, logits, y, s):
        pred = logits.argmax(1)
        ok = (pred == y) if self.targeted else (pred != y)
        if self.targeted and s.select_confidence > 0:
            ok &= torch.softmax(logits.float(), 1).gather(1, y.view(-1, 1)).squeeze(1) > s.select_confidence
        return ok

    def _track(self, tracker, x_cur, logits, maps, cls, y, target_map, s, step, aux=None):
        """Best-example bookkeeping; with a surrogate backward the true map is recomputed."""
        if s.surrogate:
            with torch.enable_grad():
                logits, maps, _ = self._interpret(x_cur, cls, s, create_graph=False)
        dist = _idls.map_distance(maps.detach(), target_map, reduction=s.reduction)
        tracker.update(x_cur, self._success(logits.detach(), y, s), dist, step, aux)

    def _joint(self, x, p, y, target_map, s, weights, gen, tick, history, fw):
        """Stage 2 on the framework's parameter p (PGD: p is x_adv itself)."""
        cs = _idls.c_schedule(s.schedule, s.c, s.steps)
        with torch.no_grad():
            x_adv = fw.image(p, x, weights).detach()
        aux = fw.per_sample(p)  # per-sample values that follow the chosen example (StAdv's flow)
        tracker = _idls.BestTracker(x_adv, aux) if self.select == "best" else None
        cls = y
        if not self.targeted:
            with torch.no_grad():
                cls = self.model(x_adv).argmax(1)
        at = [0]  # the step index, for the released losses' per-step draw (never captured in a graph)
        step = self._stepper("joint", lambda *a: self._joint_step(*a, s=s, fw=fw, gen=gen, i=at[0]), s,
                             blocker=self._graph_blocker())
        for i, c in enumerate(cs):
            tick()
            at[0] = i
            track = tracker is not None and i % s.check_every == 0
            aux = fw.per_sample(p) if track else None  # before the step (Adam updates p in place)
            p, loss, x_adv, logits, maps = step(p, x, y, cls, target_map, c, weights)
            if track:
                self._track(tracker, x_adv, logits, maps, cls, y, target_map, s, i, aux)
            if not self.targeted:
                cls = logits.argmax(1)
            history.append(loss)
        with torch.no_grad():
            x_adv = fw.image(p, x, weights).detach()
        last = fw.per_sample(p)
        if tracker is None:
            return x_adv, last
        with torch.enable_grad():  # gradient-based maps (Grad-CAM, Grad) need autograd even here
            logits, maps, _ = self._interpret(x_adv, cls, s, create_graph=False)
        self._track(tracker, x_adv, logits, maps, cls, y, target_map, s, s.steps, last)
        return tracker.result(x_adv), {"best_found": tracker.found.float(), **tracker.aux_result(last)}

    def _joint_step(self, p, x, y, cls, target_map, c, weights, *, s, fw, gen, i):
        """One stage-2 step: (the next p, the mean loss, and this step's example, logits and maps,
        detached, for the bookkeeping)."""
        p = p.detach().requires_grad_(True)
        x_adv = fw.image(p, x, weights)
        logits, maps, extra = self._interpret(x_adv, cls, s)
        loss = fw.pred_weight * self._joint_prediction_loss(logits, y, i, s.steps, gen, s) \
            + c * _idls.map_distance(maps, target_map, reduction=s.reduction)
        for term in (extra, fw.penalty(p, x, x_adv)):
            if term is not None:
                loss = loss + term
        (grad,) = torch.autograd.grad(loss.sum(), p)
        return (fw.step(p, grad, x, weights), loss.detach().mean(), x_adv.detach(), logits.detach(),
                maps.detach())

    def _check_bounds(self, x_adv, x):
        """PGD: the eps-ball and [0, 1]; C&W and StAdv bound only [0, 1] (the authors' code has no
        L∞ constraint; see :mod:`idlsec.attacks.frameworks`)."""
        if self.framework == "pgd":
            return super()._check_bounds(x_adv, x)
        if float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
            raise RuntimeError(f"{self.name} returned an example outside [0, 1]; this is a bug")

    def _mask_distance(self, state, target_map, s):
        maps = self.interpreter.state_map(state)
        maps = minmax(maps) if self.interpreter.normalize else maps
        return _idls.map_distance(maps, target_map, reduction=s.reduction)

    def _mask_unrolled_distance(self, x_adv, cls, state, target_map, s):
        """Mean map distance over ``mask_inner_steps`` unrolled (differentiable) mask steps from
        ``state``: a per-sample function of x_adv, and the state after those steps."""
        dists, st = [], state
        for _ in range(self.mask_inner_steps):
            st = self.interpreter.steps(x_adv, cls, st, 1, create_graph=True)
            dists.append(self._mask_distance(st, target_map, s))
        return torch.stack(dists).mean(0), st

    def _mask_solve_and_track(self, x_cur, cls, y, target_map, s, tracker, step):
        state = self.interpreter.solve(x_cur, cls)
        with torch.no_grad():
            logits = self.model(x_cur)
        tracker.update(x_cur, self._success(logits, y, s), self._mask_distance(state, target_map, s), step)
        return state

    def _joint_mask(self, x, x_adv, y, target_map, s, weights, gen, tick, history):
        """ADV^2's bilevel MASK attack (``rev1/mask_v2/attack_mask_multistep_target.py``)."""
        mask = self.interpreter
        margin = self._signed(_idls.cw_margin)
        scale = _idls.l2_step_scale(x)
        beta, max_step = self.mask_step * scale, self.mask_max_step * scale
        k = self.mask_inner_steps
        tracker = _idls.BestTracker(x_adv)
        cls = y
        if not self.targeted:
            with torch.no_grad():
                cls = self.model(x_adv).argmax(1)
        state = self._mask_solve_and_track(x_adv, cls, y, target_map, s, tracker, -1)
        weigh = (lambda g: g) if weights is None else (lambda g: g * weights)
        for i in range(s.steps):
            tick()
            if i % self.mask_resolve_every == self.mask_resolve_every - 1:
                state = self._mask_solve_and_track(x_adv, cls, y, target_map, s, tracker, i)
            # (a) an L2-normalised step on the prediction margin
            x_adv = x_adv.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self._mask_margin_loss(self.model(x_adv), y).sum(), x_adv)
            x_adv = project_linf(x_adv.detach() - beta * _idls.l2_normalize(weigh(g)), x, self.eps)
            # (b) k mask steps without backprop, (c) k unrolled steps with it
            state = mask.steps(x_adv, cls, state, k)
            x_adv.requires_grad_(True)
            dist, st = self._mask_unrolled_distance(x_adv, cls, state, target_map, s)
            (g,) = torch.autograd.grad(dist.sum(), x_adv)
            state = st.detach()
            x_adv = x_adv.detach()
            # (d)-(f) the largest step along -g that keeps the margin below -mask_margin (bisection)
            direction = _idls.l2_normalize(weigh(g))
            lo = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
            hi = torch.full_like(lo, max_step if i < 0.9 * s.steps else max_step / 2)
            with torch.no_grad():
                for _ in range(self.mask_bisection):
                    mid = (lo + hi) / 2
                    trial = project_linf(x_adv - mid.view(-1, 1, 1, 1) * direction, x, self.eps)
                    ok = margin(self.model(trial), y) < -self.mask_margin
                    lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
                x_adv = project_linf(x_adv - lo.view(-1, 1, 1, 1) * direction, x, self.eps)
            history.append(dist.detach().mean())
        self._mask_solve_and_track(x_adv, cls, y, target_map, s, tracker, s.steps)
        return tracker.result(x_adv), {"best_found": tracker.found.float()}
