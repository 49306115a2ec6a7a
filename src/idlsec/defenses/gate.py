"""A stateful monitor with a stateless detector in front: the oracle defense for the query that a
history cannot judge.

A history-based monitor (:class:`~idlsec.defenses.PIHA`, :class:`~idlsec.defenses.BlackLight`)
compares a query with the earlier queries of its stream, so a stream's first query is never
flagged, and an attack whose first query already fools the model (QuScore's transfer start, any
transferred example) is never stopped. ``DetectorGate`` adds a fitted
:class:`~idlsec.defenses.Detector` that judges every query on its own; a query is flagged when
the history monitor or the detector flags it:

    det = get_detector("ensemble", victim).fit(x_val, x_adv_val, fpr=0.005, x_calib=x_cal)
    gate = DetectorGate(PIHA(), det)
    oracle = BlackBox(victim, monitor=gate, on_detect="refuse")

Cost: the history monitor sees every query (it must, to keep the history); with ``sticky``
(default) the detector scores only the queries of streams not yet flagged, in one batched call
per oracle call, and a flagged stream's later queries read flagged (the oracle records a stream's
first flag and, with ``on_detect="refuse"``, refuses the stream from then on, so those scores
change no outcome). ``sticky=False`` judges every query on its own (per-query false-alarm rates
on a benign stream). ``scored`` counts the queries the detector scored.

False alarms add: a benign query is flagged when either part flags it, so the gate's rate is at
most the sum of the monitor's and the detector's (the detector's threshold is its benign
(1 - fpr) quantile on its calibration images).

Measured (benchmarks/stateful_gate.py, docs/defenses.md; PIHA OR the ensemble detector fitted on
val with the defender's own transfer examples, 0.5% FPR; 60 runs per cell): QuScore runs stopped
before success on cifar10-resnet56 0.97 (PIHA alone 0.00), on cifar10-vgg 0.82 (0.77); Square
1.00 on both; benign false alarms 0.30% / 0.83% per query. An attacker who crafts its first query
against a shadow detector evades in at most 0.22 / 0.27 of runs; one who shifts every query out of
PIHA's reach, 0.05 / 0.15.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..validation import check_bool, check_monitor
from .base import Detector
from .stateful import stream_ids


class DetectorGate:
    """A stateful ``monitor`` OR a fitted ``detector``, as one oracle monitor (module docstring).

    Args:
        monitor: anything with ``observe(x, streams) -> bool (N,)`` and ``reset()``, or None
            (the detector alone).
        detector: a fitted :class:`~idlsec.defenses.Detector` (its threshold set).
        sticky: a stream once flagged stays flagged, its later queries not scored (True).
    """

    def __init__(self, monitor: object | None, detector: Detector, *, sticky: bool = True):
        if monitor is not None:
            check_monitor(monitor)
        if not callable(getattr(detector, "score", None)) or getattr(detector, "threshold", None) is None:
            raise ConfigError("detector must be a fitted Detector (call fit() first: its threshold is unset)")
        self.monitor, self.detector, self.sticky = monitor, detector, check_bool("sticky", sticky)
        self.reset()

    def reset(self) -> None:
        """Forget the monitor's history and which streams are flagged."""
        if self.monitor is not None:
            self.monitor.reset()
        self._flagged: set[int] = set()
        self.scored = 0

    def observe(self, x: torch.Tensor, streams=None) -> torch.Tensor:
        """Flags (bool (N,), CPU) for the queries ``x`` in row order: True for a stream flagged by
        an earlier call, else the monitor's flag OR, for a query of a stream not flagged before
        its row, the detector's."""
        ids = stream_ids(streams, x.shape[0]).reshape(-1).cpu()
        flags = (torch.zeros(len(ids), dtype=torch.bool) if self.monitor is None
                 else self.monitor.observe(x, ids).to("cpu", torch.bool).reshape(-1).clone())
        streams = ids.tolist()
        if not self.sticky:
            todo = (~flags).nonzero().flatten().tolist()
        else:   # a row needs the detector unless its stream was flagged by an earlier call or row
            first_flag = {}
            for i, (s, f) in enumerate(zip(streams, flags.tolist())):
                if f:
                    first_flag.setdefault(s, i)
            todo = [i for i, s in enumerate(streams)
                    if s not in self._flagged and first_flag.get(s, len(streams)) > i]
        if todo:
            idx = torch.tensor(todo)
            scores = self.detector.score(x[idx.to(x.device)].detach()).to("cpu").reshape(-1)
            flags[idx] = scores > self.detector.threshold
            self.scored += len(todo)
        if self.sticky:   # a row of a flagged stream (earlier call, or earlier row) reads flagged
            for i, s in enumerate(streams):
                flags[i] |= s in self._flagged
                if flags[i]:
                    self._flagged.add(s)
        return flags

    def __repr__(self) -> str:
        return (f"DetectorGate(monitor={self.monitor!r}, detector={type(self.detector).__name__}, "
                f"sticky={self.sticky}, scored={self.scored})")
