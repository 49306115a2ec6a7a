"""Losses, schedules and per-interpreter settings shared by the IDLS attacks (ADV^2, AdvEdge).

Every loss here returns one value per sample (Tensor(N)); the loops sum them, so that each
image's gradient is independent of the batch it is in (the authors use ``reduction="sum"``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..metrics.losses import exact_cross_entropy, exact_smooth_cross_entropy

GRAD_MAP_PIXELS = 56 * 56   # ADV^2's Grad maps on ImageNet; the Grad map loss is rescaled to it


# --- prediction losses (§1.3 of ALGORITHMS.md) --------------------------------------------------
def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the target, per sample; :func:`exact_cross_entropy`, whose gradient stays
    exact in float32 when p_y rounds to 1 (``F.cross_entropy``'s loses its y component there)."""
    return exact_cross_entropy(logits, target, reduction="none")


def smooth_ce(logits: torch.Tensor, target: torch.Tensor, conf) -> torch.Tensor:
    """Label-smoothed cross-entropy: weight ``conf`` (float or Tensor(N)) on the target, the
    rest spread evenly over the other K-1 classes, per sample (float32-exact gradient:
    :func:`idlsec.metrics.losses.exact_smooth_cross_entropy`)."""
    return exact_smooth_cross_entropy(logits, target, conf)


def cw_margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """C&W margin ``max_{j != t} z_j - z_t`` per sample (negative once the target wins)."""
    z_t = logits.gather(1, target.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, target.view(-1, 1), float("-inf")).amax(1)
    return other - z_t


def neg_logit(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The negative raw target logit (AdvEdge's stage-1 loss for CAM and RTS)."""
    return -logits.gather(1, target.view(-1, 1)).squeeze(1)


def untargeted(loss_fn):
    """Turn a targeted loss (to minimise towards y) into an untargeted one (away from y)."""
    return lambda logits, y, *a: -loss_fn(logits, y, *a)


# --- interpretation loss -------------------------------------------------------------------------
def map_distance(maps: torch.Tensor, target_map: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Squared L2 between maps, per sample: mean over pixels (CAM, RTS) or, for Grad, a sum over
    pixels rescaled to ADV^2's 56x56 maps so that its λ values carry over to other map sizes."""
    sq = (maps - target_map).pow(2).flatten(1)
    if reduction == "mean":
        return sq.mean(1)
    return sq.sum(1) * (GRAD_MAP_PIXELS / sq.shape[1])


# --- schedules of the interpretation weight c --------------------------------------------------
def linear_ramp(c0: float, steps: int) -> torch.Tensor:
    """ADV^2 CAM/RTS: c grows linearly from c0 (exclusive) to 2·c0 over the joint stage."""
    return c0 + c0 * torch.arange(1, steps + 1, dtype=torch.float64) / max(steps, 1)


GRAD_LEVELS = (1.0, 4.0, 10.0, 50.0)          # ADV^2 Grad: c0·(1, 4, 10, 50) = (0.001, ..., 0.05)
GRAD_STEPS = (301, 201, 101, 101)             # steps at each level (704 in all)


def staircase(c0: float, steps: int, levels=GRAD_LEVELS, lengths=GRAD_STEPS) -> torch.Tensor:
    """ADV^2 Grad: c0·levels[j] for lengths[j] steps, the lengths rescaled to ``steps`` in all."""
    total = sum(lengths)
    bounds = torch.tensor([sum(lengths[: j + 1]) for j in range(len(lengths))], dtype=torch.float64)
    pos = (torch.arange(steps, dtype=torch.float64) + 0.5) * total / max(steps, 1)
    idx = torch.bucketize(pos, bounds, right=True).clamp_(max=len(levels) - 1)
    return c0 * torch.tensor(levels, dtype=torch.float64)[idx]


def c_schedule(kind: str, c0: float, steps: int) -> list[float]:
    if kind == "linear":
        return linear_ramp(c0, steps).tolist()
    if kind == "staircase":
        return staircase(c0, steps).tolist()
    if kind == "constant":
        return [float(c0)] * steps
    raise ConfigError(f"unknown c schedule {kind!r}; valid: constant, linear, staircase")


# --- per-interpreter settings (papers' values; §3.3, §4.4) ------------------------------------
@dataclass(frozen=True)
class Profile:
    warmup_steps: int = 300
    steps: int = 1000
    c: float = 5.0
    schedule: str = "linear"
    reduction: str = "mean"          # map distance: "mean" over pixels or "sum" (Grad)
    surrogate: bool = False          # the attack map is a smooth-ReLU surrogate's (Grad): the best
                                     # example is chosen on a recomputed true-ReLU map
    select_confidence: float = 0.0   # best example: p(target) above this
    check_every: int = 1             # best-example bookkeeping period
    encoder_weight: float = 0.0      # RTS: weight of the encoder-classification term
    edge_threshold: float = 0.1      # AdvEdge+: θ


PROFILES: dict[str, Profile] = {
    "cam": Profile(),
    "gradcam": Profile(),
    "grad": Profile(warmup_steps=300, steps=sum(GRAD_STEPS), c=0.001, schedule="staircase", reduction="sum",
                    surrogate=True, select_confidence=0.8, check_every=10),
    "smoothgrad": Profile(warmup_steps=300, steps=sum(GRAD_STEPS), c=0.001, schedule="staircase",
                          reduction="sum", surrogate=True, select_confidence=0.8, check_every=10),
    "rts": Profile(encoder_weight=0.1, edge_threshold=0.05),
    "mask": Profile(warmup_steps=400, steps=1000),
}


def profile_for(interpreter) -> Profile:
    """The ADV^2 settings for an interpreter (instance or class).

    An interpreter declares them with a class attribute ``adv2_profile``: the name of a built-in
    profile (``"cam"``: reuse CAM's), a :class:`Profile`, or a dict of Profile fields (the rest keep
    their defaults). The built-in interpreters' profiles are the papers' (:data:`PROFILES`, by name).
    An interpreter with neither is refused: its loss scale and schedule are unknown, and CAM's
    would be a silent guess."""
    klass = interpreter if isinstance(interpreter, type) else type(interpreter)
    name = getattr(klass, "name", klass.__name__)
    declared = getattr(klass, "adv2_profile", None)
    if declared is None:
        if name in PROFILES:
            return PROFILES[name]
        raise ConfigError(
            f"interpreter {name!r} declares no ADV^2 attack profile, so ADV^2/AdvEdge cannot attack it; "
            f"set `adv2_profile` on its class: a built-in profile's name ({', '.join(PROFILES)}) or a "
            f"dict of {sorted(Profile.__dataclass_fields__)}")
    if isinstance(declared, Profile):
        return declared
    if isinstance(declared, str):
        if declared not in PROFILES:
            raise ConfigError(f"interpreter {name!r}: adv2_profile {declared!r} is not a built-in profile; "
                              f"valid: {', '.join(PROFILES)}")
        return PROFILES[declared]
    if isinstance(declared, dict):
        unknown = set(declared) - set(Profile.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"interpreter {name!r}: adv2_profile has unknown field(s) {sorted(unknown)}; "
                              f"valid: {sorted(Profile.__dataclass_fields__)}")
        return Profile(**declared)
    raise ConfigError(f"interpreter {name!r}: adv2_profile must be a profile name, a Profile or a dict, "
                      f"got {type(declared).__name__}")


class BestTracker:
    """Per-sample best example: the successful candidate (prediction == target, confidence above
    a floor) whose map is closest to the target map. All updates are batched masks."""

    def __init__(self, x: torch.Tensor, aux: dict | None = None):
        n = x.shape[0]
        self.aux = {k: v.detach().clone() for k, v in (aux or {}).items()}  # per-sample values (N,)
        self.x = x.clone()
        self.dist = torch.full((n,), float("inf"), device=x.device)
        self.found = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.step = torch.full((n,), -1, dtype=torch.long, device=x.device)

    @torch.no_grad()
    def update(self, x_cand, ok: torch.Tensor, dist: torch.Tensor, step: int, aux: dict | None = None):
        better = ok & (dist < self.dist)
        for k, v in (aux or {}).items():
            self.aux[k] = torch.where(better, v.detach().to(self.aux[k].dtype), self.aux[k])
        self.x = torch.where(better.view(-1, 1, 1, 1), x_cand, self.x)
        self.dist = torch.where(better, dist.to(self.dist.dtype), self.dist)
        self.found |= better
        self.step = torch.where(better, torch.full_like(self.step, step), self.step)

    def result(self, x_last: torch.Tensor) -> torch.Tensor:
        return torch.where(self.found.view(-1, 1, 1, 1), self.x, x_last)

    def aux_result(self, aux_last: dict) -> dict:
        """The tracked per-sample values of the returned examples (the last ones where none was found)."""
        return {k: torch.where(self.found, self.aux[k], v) for k, v in aux_last.items()}


def l2_normalize(g: torch.Tensor) -> torch.Tensor:
    """Each sample of g divided by its L2 norm (zero stays zero)."""
    norm = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    return g / norm.view(-1, *([1] * (g.dim() - 1)))


IMAGENET_DIMS = 3 * 224 * 224


def l2_step_scale(x: torch.Tensor) -> float:
    """L2 step sizes given for 224x224x3 images, rescaled so the per-pixel RMS step is the same."""
    return (x[0].numel() / IMAGENET_DIMS) ** 0.5
