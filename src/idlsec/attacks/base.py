"""The attack contract (torchattacks' ergonomics, ART's parameter discipline):

    atk = SomeAttack(model, interpreter, eps=8/255, ..., targeted=True, seed=0)   # keyword-only
    x_adv = atk(x, y)          # y: true labels, or target labels when targeted=True
    res = atk.run(x, y, target_map=None)   # -> AttackResult

Subclasses implement ``_run(x, y, target_map) -> (x_adv, info)``. The base class validates
inputs once per call, puts the model in eval mode and restores it, computes the benign and
adversarial maps (the map the system shows for its own prediction), checks ‖x_adv − x‖∞ ≤ eps
and [0, 1] before returning, and owns the progress bar.

White-box attacks take ``compile=True`` (:mod:`idlsec.compiling`): for the attack's duration the
loop runs on the model's cached compiled copy and the interpreter on its compiled path, compiled
once per model and reused across steps, batches and attacks (eager fallback with a warning).
``cuda_graph=True`` (PGD, ADV^2, AdvEdge(+)): on CUDA each step is replayed from a captured CUDA
graph (:mod:`idlsec.cuda_graphs`; the ordinary step with a warning on the CPU).
``amp="bf16"|"fp16"`` (default None): the steps' forward passes under autocast, losses and maps in
float32 (:mod:`idlsec.precision`); the result's maps are the interpreter's own (float32 by default).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..interpreters.base import Interpreter, eval_mode
from ..metrics.attack import class_confidence
from ..precision import autocast, check_amp
from ..runtime import flush_denormal
from ..validation import check_bool, check_images, check_labels, check_positive


@dataclass
class AttackResult:
    """Everything a benchmark needs about one batch; tensors are on the input's device."""

    x_adv: torch.Tensor
    x: torch.Tensor
    labels: torch.Tensor          # the y given: targets (targeted) or true labels (untargeted)
    targeted: bool
    logits: torch.Tensor          # of x_adv
    pred: torch.Tensor
    success: torch.Tensor         # bool (N,)
    confidence: torch.Tensor      # p(target) when targeted, p(pred) otherwise
    benign_map: torch.Tensor | None = None
    adv_map: torch.Tensor | None = None
    queries: torch.Tensor | None = None  # black-box attacks: queries spent per image
    steps: int = 0
    seconds: float = 0.0
    loss_history: list[float] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def linf_box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The L∞ ball of radius eps around x intersected with [0, 1], as (lower, upper) bounds:
    compute it once per attack, then project each step with ``x_adv.clamp(lower, upper)``."""
    return (x - eps).clamp_(min=0), (x + eps).clamp_(max=1)


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the L∞ ball of radius eps around x, intersected with [0, 1]."""
    return x_adv.clamp(*linf_box(x, eps))


ProgressCallback = Callable[[int, int], None]


class Attack:
    """Base class of every attack; see the module docstring for the contract."""

    name: ClassVar[str] = "attack"
    needs_interpreter: ClassVar[bool] = False
    black_box: ClassVar[bool] = False
    #: black-box attacks: the interpreter an evaluator holding the model uses for the result's maps
    #: (set by :func:`idlsec.spec.build`; the attack itself never calls it while attacking)
    evaluator: Interpreter | None = None
    #: white-box attacks set it from their ``compile=`` keyword (black-box ones query an oracle)
    compile: bool = False
    #: PGD, ADV^2, AdvEdge(+) set these from their ``cuda_graph=`` and ``amp=`` keywords
    cuda_graph: bool = False
    amp: str | None = None

    def __init__(self, model: nn.Module, interpreter: Interpreter | None = None, *, eps: float = 8 / 255,
                 targeted: bool = False, seed: int = 0, progress: bool = False,
                 callback: ProgressCallback | None = None):
        self.model = model
        self.interpreter = interpreter
        self.eps = eps
        self.targeted = targeted
        self.seed = seed
        self.progress = progress
        self.callback = callback
        card = getattr(model, "card", None)
        self.num_classes = card.num_classes if card is not None else None
        if self.needs_interpreter and interpreter is None:
            raise ConfigError(f"{self.name} attacks an interpreter; pass one (e.g. CAM(model))")

    # --- parameters -------------------------------------------------------------------------
    def _check_params(self) -> None:
        """Validate hyperparameters; subclasses extend with ``super()._check_params()``."""
        check_positive("eps", self.eps, upper=1.0)
        if not isinstance(self.targeted, bool):
            raise ConfigError(f"targeted must be True or False, got {self.targeted!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        check_bool("compile", self.compile)
        check_bool("cuda_graph", self.cuda_graph)
        check_amp(self.amp)

    @classmethod
    def param_defaults(cls) -> dict:
        """Every keyword-only hyperparameter with its default, read from the ``__init__`` of each
        class of the MRO (base first; a subclass's default wins). A subclass that extends another
        attack declares only its own parameters and forwards the rest with ``**params`` (AdvEdge)."""
        out: dict = {}
        for klass in reversed(cls.__mro__):
            if "__init__" in vars(klass) and issubclass(klass, Attack):
                for p in inspect.signature(klass.__init__).parameters.values():
                    if p.kind is p.KEYWORD_ONLY:
                        out[p.name] = None if p.default is p.empty else p.default
        return out

    @classmethod
    def param_names(cls) -> list[str]:
        return list(cls.param_defaults())

    @classmethod
    def check_interpreter_class(cls, interpreter_cls) -> None:
        """Refuse (ConfigError) an interpreter class this attack cannot target; checked by
        :meth:`idlsec.spec.AttackSpec.check` before any model is loaded."""
        if cls.needs_interpreter and interpreter_cls is None:
            raise ConfigError(f"{cls.name} attacks an interpreter; give one")

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self.param_names() if k not in ("callback",)}

    def set_params(self, **kwargs) -> Attack:
        unknown = set(kwargs) - set(self.param_names())
        if unknown:
            raise ConfigError(f"{self.name} has no parameter(s) {sorted(unknown)}; valid: {self.param_names()}")
        for k, v in kwargs.items():
            setattr(self, k, v)
        self._check_params()
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k != "progress")
        return f"{type(self).__name__}({params})"

    # --- running ----------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, target_map: torch.Tensor | None = None) -> torch.Tensor:
        """Only the adversarial examples, without ``run``'s final evaluation pass (torchattacks' contract)."""
        return self._generate(x, y, target_map, need_benign_map=self.needs_interpreter)[2]

    def run(self, x: torch.Tensor, y: torch.Tensor, *, target_map: torch.Tensor | None = None,
            benign_map: torch.Tensor | None = None) -> AttackResult:
        """``benign_map``: ``self.benign_map(x)``, already computed (the suite runner's grid
        scheduler computes it once for every attack on the same images and interpreter)."""
        x, y, x_adv, benign_map, info, seconds = self._generate(x, y, target_map, need_benign_map=True,
                                                                benign_map=benign_map)
        with eval_mode(self.model):
            with torch.no_grad():
                logits = self.model(x_adv)
            adv_map = self.interpreter(x_adv) if self.interpreter is not None else None
        pred = logits.argmax(1)
        success = pred == y if self.targeted else pred != y
        confidence = class_confidence(logits, y if self.targeted else pred)
        return AttackResult(
            x_adv=x_adv, x=x, labels=y, targeted=self.targeted, logits=logits, pred=pred, success=success,
            confidence=confidence, benign_map=benign_map, adv_map=adv_map, queries=info.pop("queries", None),
            steps=int(info.pop("steps", 0)), seconds=seconds, loss_history=info.pop("loss_history", []),
            info=info)

    def benign_map(self, x: torch.Tensor) -> torch.Tensor:
        """The interpreter's map of ``x`` (the system's own prediction), as ``run`` computes it."""
        if self.interpreter is None:
            raise ConfigError(f"{self.name} has no interpreter: there is no benign map")
        with eval_mode(self.model):
            return self.interpreter(x.detach())

    def _generate(self, x, y, target_map, *, need_benign_map: bool, benign_map=None):
        """Validate once, run ``_run`` in eval mode, check the bounds:
        (x, y, x_adv, benign_map, info, seconds)."""
        self._check_params()
        check_images(x)
        y = check_labels(y, x.shape[0], num_classes=self.num_classes).to(x.device)
        x = x.detach()
        if benign_map is not None:
            self._check_given_map(benign_map, x)
        elif self.interpreter is not None and need_benign_map:
            benign_map = self.benign_map(x)
        with eval_mode(self.model):
            if target_map is not None:
                target_map = self._check_target_map(target_map, benign_map, x)
            start = time.perf_counter()
            with flush_denormal(), self._compiled():  # denormals would otherwise slow the CPU loop
                x_adv, info = self._run(x, y, benign_map if target_map is None else target_map)
            seconds = time.perf_counter() - start
        x_adv = x_adv.detach()
        self._check_bounds(x_adv, x)
        return x, y, x_adv, benign_map, info, seconds

    @contextmanager
    def _compiled(self):
        """With ``compile=True``: the model's compiled copy as ``self.model`` and the interpreter's
        compiled path, both restored afterwards (:mod:`idlsec.compiling`)."""
        if not self.compile:
            yield
            return
        from ..compiling import compiled_model

        model = self.model
        interp = self.interpreter.compiled_for(True) if self.interpreter is not None else nullcontext()
        self.model = compiled_model(model)
        try:
            with interp:
                yield
        finally:
            self.model = model

    def _stepper(self, name: str, fn, *key, blocker: str | None = None):
        """``fn`` (one attack step: tensors in, tensors out), or with ``cuda_graph=True`` its CUDA
        graph replay (:func:`idlsec.cuda_graphs.graphed`); ``key``: what else the step depends on
        (the attack's parameters, model and interpreter are added here); ``blocker``: why this
        step cannot be captured (it then runs as it is, after a warning)."""
        if not self.cuda_graph:
            return fn
        from ..cuda_graphs import graphed

        interp = self.interpreter
        key = (repr(self), id(self.model), id(interp), getattr(interp, "compiling", None), *key)
        return graphed(self, name, fn, key, blocker=blocker)

    def _autocast(self, x: torch.Tensor):
        """The steps' forward passes under ``amp`` (a no-op context without)."""
        return autocast(x.device, self.amp)

    def _run(self, x: torch.Tensor, y: torch.Tensor, target_map: torch.Tensor | None):
        """Return (x_adv, info); info may carry steps, loss_history, queries and extras."""
        raise NotImplementedError

    # --- helpers for subclasses ------------------------------------------------------------
    def _generator(self, device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed)

    def _steps(self, total: int, desc: str | None = None):
        """Iterate over ``range(total)`` with the progress bar and the callback."""
        bar = tqdm(range(total), desc=desc or self.name, disable=not self.progress, leave=False)
        for i in bar:
            yield i
            if self.callback is not None:
                self.callback(i + 1, total)

    def _evaluator_view(self, res: AttackResult) -> AttackResult:
        """With an ``evaluator``, the result's maps are its maps of x and x_adv (the target's
        interpreter on the undefended model), not what the attack saw."""
        if self.evaluator is not None:
            res.benign_map, res.adv_map = self.evaluator(res.x), self.evaluator(res.x_adv)
        return res

    def _check_given_map(self, benign_map, x):
        from ..errors import InputError

        if self.interpreter is None:
            raise ConfigError(f"{self.name} has no interpreter: benign_map cannot be given")
        if benign_map.shape[0] != x.shape[0] or benign_map.device != x.device:
            raise InputError(f"benign_map must hold one map per image on {x.device}, got "
                             f"{tuple(benign_map.shape)} on {benign_map.device}")

    def _check_target_map(self, target_map, benign_map, x):
        from ..errors import InputError

        if benign_map is not None and target_map.shape != benign_map.shape:
            raise InputError(f"target_map must have the interpreter's shape {tuple(benign_map.shape)}, "
                             f"got {tuple(target_map.shape)}")
        if not torch.isfinite(target_map).all():
            raise InputError("target_map contains NaN or Inf")
        return target_map.to(x.device, x.dtype)

    def _check_bounds(self, x_adv, x):
        excess = float((x_adv - x).abs().max()) - self.eps
        if excess > 1e-5 or float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
            raise RuntimeError(f"{self.name} returned an example outside the eps-ball or [0,1] "
                               f"(linf excess {excess:.2e}); this is a bug")
