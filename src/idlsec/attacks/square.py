"""Square Attack (Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020), L∞, through the query oracle: the baseline QuScore is
compared with.

The search itself is torchattacks' ``Square`` (the authors' algorithm: random square-shaped
±2·eps updates of a vertical-stripe initialisation, margin loss, the ``p_init`` schedule). Here it
sees the victim only through a :class:`~idlsec.attacks.oracle.BlackBox`: every row it evaluates is
one oracle query, charged to the benign image the row lies within eps of (the nearest one, in
L∞), so ``queries`` are exact per-image counts including Square's initial clean check.
Log-probabilities stand in for logits: the margin loss only uses differences of them, which are
the same. Deviation: torchattacks spends three queries besides its ``n_queries`` iterations
(clean check, initialisation, final check), so it runs ``max_queries - 3`` iterations and no
image exceeds ``max_queries``. Defaults: eps 8/255,
``p_init`` 0.8 and ``n_restarts`` 1 (torchattacks' defaults), untargeted.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .oracle import BlackBox, BlackBoxAttack
from .registry import register_attack


class _OracleModel(nn.Module):
    """torchattacks' view of the oracle: log-probabilities, each row charged to its image. It
    remembers the oracle's answer for every row it asked about, so the returned examples (always
    rows Square evaluated) need no extra query."""

    def __init__(self, oracle: BlackBox, x0: torch.Tensor):
        super().__init__()
        self.oracle, self.x0 = oracle, x0.flatten(1)
        self._anchor = nn.Parameter(
            torch.zeros(1, device=x0.device), requires_grad=False
        )  # .device
        self.seen: dict[bytes, torch.Tensor] = {}

    def forward(self, x):
        x = x.detach()
        ids = torch.cdist(x.flatten(1), self.x0, p=float("inf")).argmin(1).cpu()
        scores = self.oracle(x, ids)
        rows = x.flatten(1).cpu().numpy()
        for i in range(len(rows)):  # bookkeeping only (no tensor work per row)
            self.seen[rows[i].tobytes()] = scores[i]
        return scores.clamp_min(1e-30).log() if self.oracle.output == "probs" else scores.float()

    def recall(self, x_adv):
        """The oracle's scores of each row of ``x_adv`` (queried once more only if never seen)."""
        rows = x_adv.detach().flatten(1).cpu().numpy()
        got = [self.seen.get(r.tobytes()) for r in rows]
        missing = [i for i, g in enumerate(got) if g is None]
        if missing:
            more = self.oracle(x_adv[missing], torch.tensor(missing))
            for j, i in enumerate(missing):
                got[i] = more[j]
        return torch.stack(got)


@register_attack
class Square(BlackBoxAttack):
    name = "square"
    uses_surrogates = False  # the spec asks no surrogate of it

    def __init__(
        self,
        oracle: BlackBox,
        interpreter=None,
        *,
        surrogates=(),
        eps=8 / 255,
        max_queries=10_000,
        p_init=0.8,
        targeted=False,
        seed=0,
        progress=False,
        callback=None,
    ):
        super().__init__(
            oracle,
            interpreter,
            eps=eps,
            targeted=targeted,
            seed=seed,
            progress=progress,
            callback=callback,
        )
        self.surrogates = surrogates  # accepted for a uniform black-box signature; Square uses none
        self.max_queries, self.p_init = max_queries, p_init

    def _check_params(self) -> None:
        super()._check_params()
        if (
            isinstance(self.max_queries, bool)
            or not isinstance(self.max_queries, int)
            or self.max_queries < 3
        ):
            raise ConfigError(f"max_queries must be an integer >= 3, got {self.max_queries!r}")
        if (
            isinstance(self.p_init, bool)
            or not isinstance(self.p_init, (int, float))
            or not 0 < self.p_init <= 1
        ):
            raise ConfigError(f"p_init must be in (0, 1], got {self.p_init!r}")
        if self.oracle.output == "label":
            raise ConfigError(
                "square needs scores: build the oracle with output='probs' or 'logits'"
            )

    def _run(self, x, y):
        import torchattacks

        self.oracle.reset()
        victim = _OracleModel(self.oracle, x).eval()
        atk = torchattacks.Square(
            victim,
            norm="Linf",
            eps=float(self.eps),
            n_queries=self.max_queries - 3,
            p_init=float(self.p_init),
            seed=self.seed,
        )
        if self.targeted:
            atk.set_mode_targeted_by_label(quiet=True)
        x_adv = atk(x, y)
        scores = victim.recall(x_adv).to(x.device)
        queries = self.oracle.queries_per_image(torch.arange(x.shape[0]))
        pred = scores.argmax(1)
        success = pred == y if self.targeted else pred != y
        return x_adv, {"final_scores": scores, "success": success, "queries": queries}
