"""The black-box boundary: ``BlackBox`` is the only way black-box attacks touch the victim.

    bb = BlackBox(model, output="probs", interpreter=None, max_queries=10_000, defense=None)
    scores = bb(x)                         # detached (N, K); counts N queries, one per image
    scores, maps = bb(x, ids, maps=True)   # rows of x belong to images ``ids``; maps if exposed

Contract:
- Every row of ``x`` is one query, charged to its image id (``ids``; default ``0..N-1``). The
  oracle keeps a per-image counter and a total. A call that would take any image past
  ``max_queries`` raises :class:`QueryBudgetExceeded` *before* evaluating anything, so counters
  never exceed the budget and nothing is returned for an over-budget call.
- The victim runs under ``no_grad`` on a detached copy of the input; everything returned is
  detached. There is no gradient path from the outputs back to ``x`` or to the weights.
- ``output``: ``"probs"`` (softmax scores), ``"logits"``, or ``"label"`` (hard label only).
- ``interpreter``: when given, the threat model exposes the IDLS's explanation: ``maps=True``
  returns the interpreter's map of the *predicted* class (the map the system shows), computed on
  what the classifier sees (after the defense). Without it, asking for maps is an error.
- ``defense``: any callable ``x -> x'`` (an ``nn.Module`` from :mod:`idlsec.defenses`, for
  instance) applied inside the oracle before the classifier; the attacker never sees x'.
  (Layering: attacks must not import defenses, so the module is passed in.)
- ``monitor``: a stateful query monitor (``BlackLight`` from :mod:`idlsec.defenses`, or any
  object with ``observe(x, streams) -> bool (N,)`` and ``reset()``) that sees every counted query,
  in row order, with its image id as the stream (one client per image). The oracle records per
  image id the 1-based index of its first flagged query (``detections()``, -1: never flagged).
  ``on_detect="record"`` (default) only records; ``"refuse"`` raises :class:`QueryRefused` for a
  call holding any query of a flagged image id, after counting it and before evaluating anything.
  Monitoring changes no count; ``reset()`` also resets the monitor.

What the boundary does not do: Python has no private attributes. The victim is kept in a
name-mangled attribute and is not exposed by any public name, ``repr`` or property, but code that
digs into ``vars(bb)`` can reach it. The boundary is a contract that the black-box attacks in
this package keep (their only handle is the oracle, and tests check the accounting), not a
sandbox against hostile code.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, IdlsecError, InputError, QueryBudgetExceeded
from ..interpreters.base import eval_mode
from ..validation import check_choice, check_images, check_monitor
from .base import Attack, AttackResult


class QueryRefused(IdlsecError):
    """The oracle's stateful monitor flagged the querying stream and refuses to answer."""


class BlackBox:
    """A score-based (or label-only) query oracle around a victim model; see the module docstring."""

    OUTPUTS: ClassVar[tuple[str, ...]] = ("probs", "logits", "label")
    ON_DETECT: ClassVar[tuple[str, ...]] = ("record", "refuse")

    def __init__(self, model: nn.Module, *, output: str = "probs", interpreter=None,
                 max_queries: int | None = 10_000, defense: Callable | None = None, monitor=None,
                 on_detect: str = "record"):
        if not isinstance(model, nn.Module):
            raise ConfigError(f"BlackBox needs an nn.Module victim, got {type(model).__name__}")
        check_choice("output", output, self.OUTPUTS)
        if max_queries is not None and (isinstance(max_queries, bool) or not isinstance(max_queries, int)
                                        or max_queries < 1):
            raise ConfigError(f"max_queries must be a positive integer or None, got {max_queries!r}")
        if defense is not None and not callable(defense):
            raise ConfigError(f"defense must be callable (x -> x'), got {type(defense).__name__}")
        if monitor is not None:
            check_monitor(monitor)
        check_choice("on_detect", on_detect, self.ON_DETECT)
        if interpreter is not None and getattr(interpreter, "model", model) is not model:
            raise ConfigError("the oracle's interpreter must explain the oracle's own model")
        self.__model = model
        self.__interpreter = interpreter
        self.__defense = defense
        self.monitor = monitor
        self.on_detect = on_detect
        self.output = output
        self.max_queries = max_queries
        card = getattr(model, "card", None)
        self.num_classes: int | None = card.num_classes if card is not None else None
        self.input_size: tuple | None = tuple(card.input_size) if card is not None else None
        self.reset()

    # --- accounting ----------------------------------------------------------------------------
    def reset(self) -> None:
        """Zero every counter (a new attack run)."""
        self._counts = torch.zeros(0, dtype=torch.long)
        self._first_flag = torch.zeros(0, dtype=torch.long)
        self._total = 0
        if self.monitor is not None:
            self.monitor.reset()

    @property
    def queries(self) -> int:
        """Images evaluated since the last reset, all ids together."""
        return self._total

    @property
    def exposes_maps(self) -> bool:
        return self.__interpreter is not None

    @property
    def defended(self) -> bool:
        return self.__defense is not None

    @property
    def device(self) -> torch.device:
        p = next(self.__model.parameters(), None)
        b = next(self.__model.buffers(), None) if p is None else p
        return b.device if b is not None else torch.device("cpu")

    def queries_per_image(self, ids=None) -> torch.Tensor:
        """Queries charged to each image id (LongTensor on the CPU; ids never queried count 0)."""
        if ids is None:
            return self._counts.clone()
        ids = self._check_ids(ids, None)
        return self._count_of(ids)

    def remaining(self, ids) -> torch.Tensor:
        """Queries each image may still make (LongTensor; a huge number when there is no budget)."""
        ids = self._check_ids(ids, None)
        if self.max_queries is None:
            return torch.full(ids.shape, 2 ** 62, dtype=torch.long)
        return self.max_queries - self._count_of(ids)

    def detections(self, ids=None) -> torch.Tensor:
        """Per image id, the 1-based index of its first query the monitor flagged (-1: none)."""
        first = torch.where(self._first_flag > 0, self._first_flag, -1)
        if ids is None:
            return first
        ids = self._check_ids(ids, None)
        out = torch.full(ids.shape, -1, dtype=torch.long)
        known = ids < first.numel()
        out[known] = first[ids[known]]
        return out

    def _monitor(self, x: torch.Tensor, ids: torch.Tensor, before: torch.Tensor) -> None:
        """Show the call's queries to the monitor; record each id's first flagged query index."""
        flags = self.monitor.observe(x, ids).to("cpu", torch.bool).reshape(-1)
        if flags.numel() != ids.numel():
            raise ConfigError(f"the monitor returned {flags.numel()} flags for {ids.numel()} queries")
        grow = self._counts.numel() - self._first_flag.numel()
        self._first_flag = torch.cat([self._first_flag, torch.zeros(grow, dtype=torch.long)])
        # the 1-based index of each row among its image's queries: counts before + rank in the call
        order = torch.sort(ids, stable=True).indices
        sid = ids[order]
        new_group = torch.ones_like(sid, dtype=torch.bool)
        new_group[1:] = sid[1:] != sid[:-1]
        starts = torch.cummax(torch.where(new_group, torch.arange(len(sid)), 0), 0).values
        rank = torch.empty_like(ids)
        rank[order] = torch.arange(len(sid)) - starts
        index = before[ids] + rank + 1
        # first flagged query per id (stored 0: none yet): the minimum index over flagged rows
        big = torch.iinfo(torch.long).max
        hit = torch.full_like(self._first_flag, big).scatter_reduce(
            0, ids[flags], index[flags], "amin")
        fresh = (self._first_flag == 0) & (hit < big)
        self._first_flag[fresh] = hit[fresh]
        if self.on_detect == "refuse" and bool((self._first_flag[ids] > 0).any()):
            raise QueryRefused("the stateful monitor flagged this stream (similar earlier "
                               "queries); the oracle refuses to answer")

    def _count_of(self, ids: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(ids.shape, dtype=torch.long)
        known = ids < self._counts.numel()
        out[known] = self._counts[ids[known]]
        return out

    def _check_ids(self, ids, n: int | None) -> torch.Tensor:
        if isinstance(ids, int) and not isinstance(ids, bool):
            ids = torch.tensor([ids])
        if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.dtype == torch.bool:
            raise InputError(f"ids must be an integer tensor of image ids, got {ids!r:.80}")
        ids = ids.detach().to("cpu", torch.long).reshape(-1)
        if n is not None and ids.numel() != n:
            raise InputError(f"ids must have one entry per row of x ({n}), got {ids.numel()}")
        if ids.numel() and int(ids.min()) < 0:
            raise InputError("ids must be >= 0")
        return ids

    def _charge(self, ids: torch.Tensor) -> None:
        """Check the budget for this call, then count it (all or nothing)."""
        need = int(ids.max()) + 1 if ids.numel() else 0
        if need > self._counts.numel():
            self._counts = torch.cat([self._counts, torch.zeros(need - self._counts.numel(), dtype=torch.long)])
        after = self._counts + torch.bincount(ids, minlength=self._counts.numel())
        if self.max_queries is not None and bool((after > self.max_queries).any()):
            over = torch.nonzero(after > self.max_queries).flatten()
            raise QueryBudgetExceeded(
                f"query budget of {self.max_queries} per image exceeded for image id(s) "
                f"{over[:8].tolist()}{'...' if len(over) > 8 else ''} (already spent "
                f"{self._counts[over[:8]].tolist()}); nothing was evaluated")
        self._counts = after
        self._total += int(ids.numel())

    # --- querying --------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, ids=None, *, maps: bool = False):
        """Evaluate the victim on ``x`` (N, C, H, W) in [0, 1]; see the module docstring."""
        check_images(x.detach())
        if self.input_size is not None and tuple(x.shape[1:]) != self.input_size:
            raise InputError(f"x must have shape (N, {', '.join(map(str, self.input_size))}), "
                             f"got {tuple(x.shape)}")
        if maps and self.__interpreter is None:
            raise ConfigError("this oracle exposes no maps (it was built without an interpreter)")
        ids = torch.arange(x.shape[0]) if ids is None else self._check_ids(ids, x.shape[0])
        before = self._counts
        self._charge(ids)
        if self.monitor is not None:
            self._monitor(x.detach(), ids, torch.cat(
                [before, torch.zeros(self._counts.numel() - before.numel(), dtype=torch.long)]))
        out_device = x.device
        x = x.detach().to(self.device).clone()
        model = self.__model
        # toggling train/eval walks every module twice; skip it when all are in eval mode already
        mode = eval_mode(model) if any(m.training for m in model.modules()) else nullcontext()
        with mode:
            with torch.no_grad():
                seen = self.__defense(x) if self.__defense is not None else x
                logits = model(seen).float()
            pred = logits.argmax(1)
            if maps:
                # gradient-based interpreters differentiate internally w.r.t. their own copy;
                # with create_graph=False the base class returns a detached map
                m = self.__interpreter(seen.detach(), pred, create_graph=False).detach()
        if self.output == "probs":
            scores = F.softmax(logits, 1)
        elif self.output == "logits":
            scores = logits
        else:
            scores = pred
        scores = scores.detach().to(out_device)
        return (scores, m.to(out_device)) if maps else scores

    def __repr__(self) -> str:
        return (f"BlackBox(output={self.output!r}, max_queries={self.max_queries}, "
                f"maps={self.exposes_maps}, defended={self.defended}, "
                f"monitored={self.monitor is not None}, queries={self._total})")

    def __reduce__(self):
        raise TypeError("a BlackBox cannot be pickled (it would ship the victim model)")


class BlackBoxAttack(Attack):
    """Base of attacks that see the victim only through a :class:`BlackBox`.

    ``run(x, y)`` returns an AttackResult whose prediction, success and confidence are what the
    oracle answered for the returned example (with any defense inside), and whose ``queries`` are
    the oracle's exact per-image counts. Its ``benign_map``/``adv_map`` are the maps the oracle
    exposed, when it exposes them; an evaluator holding the model may recompute them (the attack
    job does, with the target's interpreter on the undefended model). Subclasses implement
    ``_run(x, y) -> (x_adv, info)`` where info carries ``final_scores`` (oracle probabilities of
    x_adv), ``success`` (bool Tensor(N)) and optionally ``benign_map``/``adv_map``."""

    black_box = True

    def __init__(self, oracle: BlackBox, interpreter=None, *, eps=8 / 255, targeted=False, seed=0,
                 progress=False, callback=None):
        if not isinstance(oracle, BlackBox):
            raise ConfigError(f"{self.name} is a black-box attack: pass a BlackBox oracle, not "
                              f"{type(oracle).__name__} (BlackBox(model, ...))")
        if interpreter is not None:
            raise ConfigError(f"{self.name} sees the victim only through its oracle; give the "
                              f"interpreter to BlackBox(model, interpreter=...) instead")
        super().__init__(oracle, None, eps=eps, targeted=targeted, seed=seed, progress=progress,
                         callback=callback)
        self.oracle = oracle
        self.num_classes = oracle.num_classes

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, target_map: torch.Tensor | None = None) -> torch.Tensor:
        return self.run(x, y, target_map=target_map).x_adv

    def run(self, x: torch.Tensor, y: torch.Tensor, *, target_map: torch.Tensor | None = None) -> AttackResult:
        import time

        from ..metrics.attack import class_confidence
        from ..validation import check_labels

        if target_map is not None:
            raise ConfigError(f"{self.name} attacks towards the benign map only (target_map unsupported)")
        self._check_params()
        check_images(x)
        y = check_labels(y, x.shape[0], num_classes=self.num_classes).to(x.device)
        x = x.detach()
        start = time.perf_counter()
        x_adv, info = self._run(x, y)
        seconds = time.perf_counter() - start
        x_adv = x_adv.detach()
        self._check_bounds(x_adv, x)
        scores = info.pop("final_scores")
        logits = scores.clamp_min(1e-30).log() if self.oracle.output == "probs" else scores.float()
        pred = scores.argmax(1)
        success = info.pop("success")
        confidence = class_confidence(logits, y if self.targeted else pred)
        return self._evaluator_view(AttackResult(
            x_adv=x_adv, x=x, labels=y, targeted=self.targeted, logits=logits, pred=pred, success=success,
            confidence=confidence, benign_map=info.pop("benign_map", None), adv_map=info.pop("adv_map", None),
            queries=info.pop("queries"), steps=int(info.pop("steps", 0)), seconds=seconds,
            loss_history=info.pop("loss_history", []), info=info))
