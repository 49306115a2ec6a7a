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

``init="transfer"`` (default ``"stripes"``, the paper's vertical-stripe start) is a surrogate-guided
variant: the search starts from the ±eps vertex of a transfer example, an MI-FGSM with input
diversity on the ``surrogates`` (:func:`.transfer.transfer_example`; ``mi_steps`` 10, ``mi_step``
0.01, ``momentum`` 1.0, ``diversity`` 0.7, ``init_rounds`` 3 restarts while the surrogates are not
fooled: QuScore's idlsec stage A with one member per image). The surrogates are local, so the
start costs no query; the search is then Square's, every victim query counted as above (the start
is Square's initialisation query). Pixels the transfer leaves unperturbed get a random sign.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..validation import check_choice, check_int, check_positive
from .oracle import BlackBox, BlackBoxAttack
from .registry import register_attack
from .transfer import transfer_example


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


def _transfer_square(base):
    """torchattacks' Square whose Linf initialisation (its first ``random_choice`` of shape
    (n, c, 1, w)) is replaced by given per-image signs, the rows matched to the images by value."""

    class _Square(base):
        init_x0 = init_sign = None
        _pending = None

        def attack_single_run(self, x, y):
            rows = torch.cdist(x.flatten(1), self.init_x0.flatten(1), p=float("inf")).argmin(1)
            self._pending = self.init_sign[rows]
            return super().attack_single_run(x, y)

        def random_choice(self, shape):
            if self._pending is not None and len(shape) == 4 and shape[2] == 1:
                out, self._pending = self._pending, None
                rnd = super().random_choice(out.shape)
                return torch.where(out == 0, rnd, out)
            return super().random_choice(shape)

    return _Square


@register_attack
class Square(BlackBoxAttack):
    name = "square"
    uses_surrogates = False  # the spec asks no surrogate of it (init="transfer" needs one)

    def __init__(
        self,
        oracle: BlackBox,
        interpreter=None,
        *,
        surrogates=(),
        eps=8 / 255,
        max_queries=10_000,
        p_init=0.8,
        init="stripes",
        mi_steps=10,
        mi_step=0.01,
        momentum=1.0,
        diversity=0.7,
        init_rounds=3,
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
        if isinstance(surrogates, nn.Module):
            surrogates = [surrogates]
        self.surrogates = list(surrogates)  # used by init="transfer" only
        self.max_queries, self.p_init, self.init = max_queries, p_init, init
        self.mi_steps, self.mi_step, self.momentum = mi_steps, mi_step, momentum
        self.diversity, self.init_rounds = diversity, init_rounds
        self._check_params()

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
        check_choice("init", self.init, ("stripes", "transfer"))
        check_int("mi_steps", self.mi_steps, minimum=1)
        check_positive("mi_step", self.mi_step, upper=1.0)
        check_positive("momentum", self.momentum, allow_zero=True)
        check_positive("diversity", self.diversity, allow_zero=True, upper=1.0)
        check_int("init_rounds", self.init_rounds, minimum=1)
        if self.init == "transfer" and (
            not self.surrogates or not all(isinstance(s, nn.Module) for s in self.surrogates)
        ):
            raise ConfigError(
                "square init='transfer' needs surrogates=[model, ...] (CLI --surrogate MODEL)"
            )

    def _run(self, x, y):
        import torchattacks

        self.oracle.reset()
        victim = _OracleModel(self.oracle, x).eval()
        cls = torchattacks.Square
        start = None
        if self.init == "transfer":
            start = self._transfer_start(x, y)
            cls = _transfer_square(cls)
        atk = cls(
            victim,
            norm="Linf",
            eps=float(self.eps),
            n_queries=self.max_queries - 3,
            p_init=float(self.p_init),
            seed=self.seed,
        )
        if start is not None:
            atk.init_x0, atk.init_sign = x, start
        if self.targeted:
            atk.set_mode_targeted_by_label(quiet=True)
        x_adv = atk(x, y)
        scores = victim.recall(x_adv).to(x.device)
        queries = self.oracle.queries_per_image(torch.arange(x.shape[0]))
        pred = scores.argmax(1)
        success = pred == y if self.targeted else pred != y
        info = {"final_scores": scores, "success": success, "queries": queries}
        if start is not None:
            info["per_sample"] = {"transfer_fooled_surrogate": self._fooled.float()}
        return x_adv, info

    def _transfer_start(self, x, y):
        """(N, C, H, W) signs of the transfer example's perturbation (0 where it is 0); no query."""
        gen = self._generator(x.device)
        x_t, self._fooled = transfer_example(
            self.surrogates, x, y, eps=float(self.eps), steps=self.mi_steps, step=self.mi_step,
            momentum=self.momentum, diversity=self.diversity, restarts=self.init_rounds,
            targeted=self.targeted, gen=gen)
        return torch.sign(x_t - x)
