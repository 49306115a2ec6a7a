"""The detector contract shared by feature squeezing and the ensemble detector:

    det = SomeDetector(model, ...)
    det.fit(x_benign, x_adv=None, fpr=0.05)     # calibrate (and, for learned detectors, train)
    report = det.detect(x)                      # DetectionReport: flags, scores, features
    scores = det.score(x)                       # Tensor(N), higher = more suspicious

A detector is a pure function of its input plus what ``fit`` learned: seeded, deterministic, and
batched internally (``batch_size``). The threshold is the benign (1 - fpr) quantile of the
calibration scores, so the false-positive rate on new benign data is fpr up to sampling error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..metrics.detection import threshold_at_fpr
from ..validation import check_images, check_int


@dataclass
class DetectionReport:
    """Per-sample result of ``Detector.detect``; tensors are on the CPU."""

    flags: torch.Tensor                # bool (N,): score > threshold
    scores: torch.Tensor               # float (N,)
    threshold: float
    pred: torch.Tensor                 # the model's prediction on x (N,)
    features: torch.Tensor | None = None        # (N, F) raw features, when the detector has them
    feature_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_records(self) -> list[dict]:
        rows = []
        for i in range(len(self)):
            r = {"flag": bool(self.flags[i]), "score": float(self.scores[i]), "pred": int(self.pred[i])}
            if self.features is not None:
                r["features"] = {n: float(v) for n, v in zip(self.feature_names, self.features[i].tolist())}
            rows.append(r)
        return rows

    def summary(self) -> dict:
        return {"n": len(self), "flagged": int(self.flags.sum()), "flag_rate": float(self.flags.float().mean()),
                "threshold": self.threshold, "score_mean": float(self.scores.mean())}


class Detector:
    """Base class: subclasses implement ``_score_batch(x) -> (scores, features | None)`` and
    may override ``_fit`` to train on benign and adversarial examples before calibrating."""

    name: ClassVar[str] = "detector"

    def __init__(self, model: nn.Module, *, batch_size: int = 128):
        self.model = model
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.threshold: float | None = None
        self.fpr: float | None = None
        card = getattr(model, "card", None)
        self.input_size = tuple(card.input_size) if card is not None else None

    # --- subclass hooks ----------------------------------------------------------------------
    def _score_batch(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _fit(self, x_benign: torch.Tensor, x_adv: torch.Tensor | None, fpr: float,
             x_calib: torch.Tensor | None) -> None:
        """Learn the score (default: nothing to learn) and set the threshold at ``fpr`` on
        ``x_calib``, else on ``x_benign``; the arguments are already validated by ``fit``."""
        self.calibrate(self.score(x_benign if x_calib is None else x_calib), fpr)

    feature_names: ClassVar[list[str]] = []

    # --- public API ---------------------------------------------------------------------------
    def _check(self, x, name="x"):
        check_images(x, name=name)
        if self.input_size is not None and tuple(x.shape[1:]) != self.input_size:
            raise InputError(f"{name} must have shape (N, {', '.join(map(str, self.input_size))}) for this model, "
                             f"got {tuple(x.shape)}")
        return x

    def _device(self):
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def _run_batches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        scores, feats, preds = [], [], []
        dev = self._device()
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, x.shape[0], self.batch_size):
                xb = x[start:start + self.batch_size].to(dev)
                s, f = self._score_batch(xb)
                with torch.no_grad():
                    preds.append(self.model(xb).argmax(1).cpu())
                scores.append(s.detach().cpu())
                if f is not None:
                    feats.append(f.detach().cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(scores), (torch.cat(feats) if feats else None), torch.cat(preds)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw per-sample features (N, F) before any learned combination."""
        self._check(x)
        _, f, _ = self._run_batches(x)
        if f is None:
            raise ConfigError(f"{self.name} has no feature vector")
        return f

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Suspicion score per sample (N,), higher = more likely adversarial."""
        self._check(x)
        return self._run_batches(x)[0]

    def fit(self, x_benign: torch.Tensor, x_adv: torch.Tensor | None = None, *, fpr: float = 0.05,
            x_calib: torch.Tensor | None = None) -> Detector:
        """Learn the score (if the detector learns) and set the threshold at ``fpr``.

        The threshold is calibrated on ``x_calib`` when given (benign images held out from the
        training of the score), else on ``x_benign``."""
        if isinstance(fpr, bool) or not isinstance(fpr, (int, float)) or not 0 < fpr < 1:
            raise ConfigError(f"fpr must be a fraction in (0, 1), got {fpr!r}")
        self._check(x_benign, "x_benign")
        if x_adv is not None:
            self._check(x_adv, "x_adv")
        if x_calib is not None:
            self._check(x_calib, "x_calib")
        self._fit(x_benign, x_adv, fpr, x_calib)
        return self

    def calibrate(self, benign_scores: torch.Tensor, fpr: float = 0.05) -> Detector:
        """Set the threshold from precomputed benign scores."""
        self.threshold = threshold_at_fpr(benign_scores, fpr)
        self.fpr = float(fpr)
        return self

    def detect(self, x: torch.Tensor) -> DetectionReport:
        if self.threshold is None:
            raise ConfigError(f"{self.name} is not calibrated: call fit(x_benign, ...) first")
        self._check(x)
        s, f, pred = self._run_batches(x)
        return DetectionReport(flags=s > self.threshold, scores=s, threshold=self.threshold, pred=pred,
                               features=f, feature_names=list(self.feature_names))

    __call__ = detect

    # --- persistence --------------------------------------------------------------------------
    def config(self) -> dict:
        """A JSON description: the name, the calibration and (in subclasses) what was learned."""
        return {"name": self.name, "threshold": self.threshold, "fpr": self.fpr}

    def init_params(self) -> dict:
        """The keyword arguments that rebuild this detector, unfitted, through its registry name
        (``get_detector(self.name, model, **init_params())``); JSON values only."""
        return {"batch_size": self.batch_size}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """What ``fit`` learned: ``(tensors, scalars)`` (JSON values), read back by
        :meth:`load_state`. Subclasses that learn extend both."""
        return {}, {"threshold": self.threshold, "fpr": self.fpr}

    def load_state(self, tensors: dict[str, torch.Tensor], scalars: dict) -> None:
        """Restore what :meth:`state` returned (the file was checked by ``load_detector``)."""
        self.threshold, self.fpr = scalars["threshold"], scalars["fpr"]

    def save(self, path: str | Path) -> Path:
        """The fitted detector as one safetensors file (no pickled code: tensors, plus JSON in
        the header), read back by :func:`idlsec.defenses.load_detector` against the same model.
        The model is not stored; its card name and a SHA-256 of its parameters and buffers are,
        and loading checks them. Written atomically; returns the path."""
        from .detector_file import write_detector

        return write_detector(self, path)
