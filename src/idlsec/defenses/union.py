"""OR-union of complementary detectors, calibrated jointly, with a union-aware adaptive loss
(issue 18 item 4: "a detector that survives its attacker").

The union flags an input when *any* of its components does. Each component (a registered detector:
default ``ensemble-random``, ``squeeze-nlm`` and ``lid``) is fitted and calibrated on its own, so
that its score s_i has a threshold τ_i and a benign spread σ_i (the standard deviation of its
calibration scores). The union's score is the largest standardised excess

    u(x) = max_i (s_i(x) − τ_i) / σ_i,

and its threshold τ_u is the benign (1 − fpr) quantile of u on the calibration images, so the
union as a whole has the stated FPR on them (each component then flags above τ_i + τ_u·σ_i: an
OR of thresholded detectors). The idea of unioning complementary detectors is the standard one
(e.g. Xu et al., NDSS 2018, take the max over squeezers; Carlini & Wagner, AISec 2017, and
Tramèr et al., NeurIPS 2020, show why each member must be attacked at once).

Adaptive attacker (``defenses.adaptive``). ``adaptive_term(x, target, margin, eot)`` is the
union-aware loss the attacker descends: max_j σ_j · Σ_i relu(ū_i(x) − τ_u + margin), every
component's standardised score above the union threshold at once, in the units the union
thresholds in (raw units would let a member with a small scale, such as squeezing's L1 distance,
be ignored), scaled so that every member weighs at least as much as in its own adaptive attack
(``relu(s_i − τ_i)``, weight 1, in its raw units) (a max would pass the gradient to one member
per step and let the others creep back over), ū_i the mean over ``eot`` draws for a randomised
member (EOT), each member's own ``score_differentiable`` (straight-through squeezers: BPDA;
maps with ``create_graph``). The members' interpreters are exposed as ``interpreters`` so the
attacker also keeps every interpreter's map close to its benign one.

Deviations and limits: the per-member thresholds are standardised by a benign spread, not matched
to equal per-member FPRs (the union's FPR on the calibration images is exact either way); members
are fitted on the same benign and adversarial images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ..errors import ConfigError
from ..metrics.detection import threshold_at_fpr
from .base import Detector

UNION_MEMBERS = ("ensemble-random", "squeeze-nlm", "lid")


class UnionDetector(Detector):
    """Flags x when any member detector's standardised score exceeds the jointly calibrated
    threshold."""

    name = "union"

    def __init__(self, model: nn.Module, members=UNION_MEMBERS, *, factories: Mapping[str, Callable],
                 member_kwargs: dict | None = None, interpreters=None, l2: float = 1e-2, seed: int = 0,
                 batch_size: int = 64):
        """``factories``: name -> ``factory(model, **kwargs)`` for the members (the registry passes
        its own table, so this module does not import the registry)."""
        super().__init__(model, batch_size=batch_size)
        if isinstance(members, str):
            members = [s for s in members.split(",") if s]
        members = list(members)
        if not members:
            raise ConfigError("the union detector needs at least one member")
        if len(set(members)) != len(members):
            raise ConfigError(f"union members must be distinct, got {members}")
        for m in members:
            if m == "union" or m not in factories:
                raise ConfigError(f"unknown union member {m!r}; valid: "
                                  f"{', '.join(sorted(d for d in factories if d != 'union'))}")
        self.member_names = members
        self.seed = int(seed)
        self.members: dict[str, Detector] = {}
        for m in members:
            kw = dict((member_kwargs or {}).get(m, {}))
            if m.startswith("ensemble"):
                kw.setdefault("l2", l2)
                kw.setdefault("seed", seed)
                if interpreters is not None:
                    kw.setdefault("interpreters", interpreters)
            elif m.startswith("squeeze"):
                kw.setdefault("seed", seed)
            elif m == "lid":
                kw.setdefault("l2", l2)
            self.members[m] = factories[m](model, **kw)
        for m, d in self.members.items():
            if not hasattr(d, "score_differentiable"):
                raise ConfigError(f"union member {m!r} has no differentiable score: the adaptive attacker "
                                  "could not descend it")
        self.feature_names = [f"z[{m}]" for m in members]
        self.spread: dict[str, float] | None = None

    @property
    def random(self) -> bool:
        """Whether a member draws random squeezers per query (its scores vary between calls)."""
        return any(getattr(d, "random", False) for d in self.members.values())

    @property
    def interpreters(self) -> dict:
        """Every member's interpreters (the adaptive attacker keeps all their maps benign)."""
        out: dict = {}
        for d in self.members.values():
            out.update(getattr(d, "interpreters", {}))
        return out

    # --- scores ---------------------------------------------------------------------------------
    def _standardise(self, name: str, s: torch.Tensor) -> torch.Tensor:
        d = self.members[name]
        return (s - d.threshold) / self.spread[name]

    def _check_fitted(self):
        if self.spread is None:
            raise ConfigError("the union detector is not fitted: call fit() first")

    def _score_batch(self, x):
        self._check_fitted()
        z = torch.stack([self._standardise(m, d.score(x).to(x.device).double())
                         for m, d in self.members.items()], 1)
        return z.max(1).values.float(), z.float()

    def score_differentiable(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """u(x) with a graph to x (a max: its gradient reaches one member per image; the
        adaptive attacker uses ``adaptive_term`` instead)."""
        self._check_fitted()
        z = torch.stack([self._standardise(m, d.score_differentiable(x, target).double())
                         for m, d in self.members.items()], 1)
        return z.max(1).values

    def adaptive_term(self, x: torch.Tensor, target: torch.Tensor, *, margin: float = 0.0, eot: int = 1):
        """(N,) union-aware detector loss max_j σ_j · Σ_i relu(ū_i − τ_u + margin) and {interpreter: map of x}
        from the ensemble member (reused by the attacker's map terms); ū_i averages ``eot`` draws
        of a randomised member."""
        self._check_fitted()
        if self.threshold is None:
            raise ConfigError("the union detector is not calibrated")
        term = torch.zeros(x.shape[0], device=x.device, dtype=torch.float64)
        shared: dict = {}
        for m, d in self.members.items():
            draws = eot if getattr(d, "random", False) else 1
            acc = 0.0
            for k in range(draws):
                if k == 0 and hasattr(d, "interpreters"):
                    s, maps = d.score_differentiable(x, target, return_maps=True)
                    shared.update(maps)
                else:
                    s = d.score_differentiable(x, target)
                acc = acc + s.double()
            z = self._standardise(m, acc / draws)
            # in benign-spread units, the units the union thresholds in (a member's raw units
            # would let a small-scale member such as squeezing's L1 distance be ignored)
            term = term + torch.relu(z - self.threshold + margin)
        # times the largest spread: every member weighs at least what its own attacker gives it
        return max(self.spread.values()) * term, shared

    # --- learning -------------------------------------------------------------------------------
    def _fit(self, x_benign, x_adv, fpr, x_calib) -> None:
        calib = x_benign if x_calib is None else x_calib
        raw = {}
        for m, d in self.members.items():
            d.fit(x_benign, x_adv, fpr=fpr, x_calib=x_calib)
            raw[m] = d.score(calib).double()
        self.spread = {m: float(s.std().clamp_min(1e-6)) for m, s in raw.items()}
        u = torch.stack([self._standardise(m, raw[m]) for m in self.members], 1).max(1).values
        self.threshold = threshold_at_fpr(u.float(), fpr)
        self.fpr = float(fpr)

    def member_flags(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Which member flags each image at the union threshold (what the union relies on)."""
        z = self.features(x)
        return {m: z[:, i] > self.threshold for i, m in enumerate(self.member_names)}

    def init_params(self) -> dict:
        # every member rebuilt from its own arguments (the union's defaults already applied)
        return {**super().init_params(), "members": self.member_names, "seed": self.seed,
                "member_kwargs": {m: d.init_params() for m, d in self.members.items()}}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, scalars = super().state()
        members = {}
        for m, d in self.members.items():
            t, members[m] = d.state()
            tensors.update({f"{m}/{k}": v for k, v in t.items()})
        return tensors, {**scalars, "spread": self.spread, "members": members}

    def load_state(self, tensors: dict[str, torch.Tensor], scalars: dict) -> None:
        super().load_state(tensors, scalars)
        for m, d in self.members.items():
            d.load_state({k.removeprefix(f"{m}/"): v for k, v in tensors.items() if k.startswith(f"{m}/")},
                         scalars["members"][m])
        self.spread = {m: float(scalars["spread"][m]) for m in self.member_names}

    def config(self) -> dict:
        return {**super().config(), "members": {m: d.config() for m, d in self.members.items()},
                "spread": self.spread, "seed": self.seed}
