"""Evaluating a defended model against attacks: what ``idlsec defend`` and ``benchmarks/defenses.yaml`` run.

Defenses: ``none`` (the model as is), a registered input transform (``rp``, ``bitdepth``,
``jpeg``, ``median``; put in front of the model), or ``model:<zoo name>`` (another model, e.g.
``model:cifar10-resnet20-robust``). For each (defense, attack):

* transforms, ``transfer``: the examples crafted on the undefended model, fed to the defended
  system (non-adaptive attacker);
* transforms, ``adaptive``: the attack re-run through the transform (``ThroughTransform``: BPDA for
  JPEG/bit depth, a fresh draw per step, i.e. EOT, for random resize-and-pad), then evaluated on the
  defended system with a fresh random stream;
* models, ``white-box``: the attack run on that model directly.

Rows give the defended system's clean accuracy, the attack success rate, the accuracy under
attack, and the map IoU (mean top-k IoU over the grid) between the defended system's maps of the
adversarial and benign images, over successful examples."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch

from ..data import load_dataset, select_images
from ..defenses.adaptive import ThroughTransform
from ..defenses.transforms import DEFENSES, get_defense
from ..errors import ConfigError
from ..interpreters import get_interpreter
from ..interpreters.layers import eval_mode
from ..metrics import topk_iou_curve
from ..models import get_card, load_model
from ..spec import AttackSpec, build_attack

TARGETED = ("adv2", "advedge", "advedge+")


@dataclass
class DefenseJob:
    model: str = "cifar10-resnet20"
    defenses: tuple = ("none", "median", "bitdepth", "jpeg", "rp")
    attacks: tuple = ("pgd", "adv2")
    interpreter: str = "cam"
    n: int = 32
    eps: float = 8 / 255
    steps: int | None = None
    warmup_steps: int | None = None
    pgd_steps: int = 10
    adaptive: bool = True
    seed: int = 0
    batch_size: int = 32
    device: str = "cpu"
    params: dict = field(default_factory=dict)
    model_weights: dict = field(default_factory=dict)  # zoo name -> weights file for ``model:<name>``
    time_cap: float | None = None          # seconds: past it, no further input transform is evaluated

    def config(self) -> dict:
        return asdict(self)


def _make(name, model, interp, job):
    """The attack ``name`` on ``model`` (the job's model, another zoo model, or the defended system
    seen through BPDA/EOT) and its interpreter, through the one construction path."""
    p = dict(job.params.get(name, {}))
    if name == "pgd":
        p = {"steps": job.pgd_steps, **p}
    elif name in TARGETED:
        if job.steps is not None:
            p.setdefault("steps", job.steps)
        if job.warmup_steps is not None:
            p.setdefault("warmup_steps", job.warmup_steps)
    else:
        raise ConfigError(f"idlsec defend runs white-box attacks: pgd, {', '.join(TARGETED)}; got {name!r}")
    spec = AttackSpec(model=job.model, attack=name, interpreter=job.interpreter, params=p, eps=job.eps,
                      targeted=name in TARGETED, seed=job.seed, device=job.device)
    return build_attack(spec, model=model, interpreter=interp)


def _craft(atk, x, labels, job):
    xs = []
    for s in range(0, x.shape[0], job.batch_size):
        xs.append(atk(x[s:s + job.batch_size].to(job.device), labels[s:s + job.batch_size].to(job.device)).cpu())
    return torch.cat(xs)


@torch.no_grad()
def _predict(model, x, job):
    with eval_mode(model):
        return torch.cat([model(x[s:s + job.batch_size].to(job.device)).argmax(1).cpu()
                          for s in range(0, x.shape[0], job.batch_size)])


def _maps(interp, x, job):
    return torch.cat([interp(x[s:s + job.batch_size].to(job.device)).cpu() for s in range(0, x.shape[0], job.batch_size)])


def _row(defense, attack, mode, system, interp, x, x_adv, y, labels, clean_acc, job):
    pred = _predict(system, x_adv, job)
    success = (pred == labels) if attack in TARGETED else (pred != y)
    iou = None
    if success.any():
        ok = success.nonzero().flatten()
        iou = float(topk_iou_curve(_maps(interp, x_adv[ok], job), _maps(interp, x[ok], job)).mean())
    return {"defense": defense, "attack": attack, "mode": mode, "n": len(y), "clean_accuracy": clean_acc,
            "asr": float(success.float().mean()), "accuracy_under_attack": float((pred == y).float().mean()),
            "iou": iou}


def _check(job):
    get_card(job.model)
    for d in job.defenses:
        if d != "none" and d not in DEFENSES and not d.startswith("model:"):
            raise ConfigError(f"unknown defense {d!r}; valid: none, {', '.join(DEFENSES)}, model:<zoo name>")
        if d.startswith("model:"):
            get_card(d.split(":", 1)[1])
    if job.n < 1:
        raise ConfigError(f"n must be >= 1, got {job.n}")


def run_defense_job(job: DefenseJob, *, log=print) -> dict:
    _check(job)
    start = time.perf_counter()
    torch.manual_seed(job.seed)
    model = load_model(job.model, device=job.device)
    dataset = load_dataset(get_card(job.model).dataset, "test")
    sel = select_images(dataset, job.n, seed=job.seed, model=model, correct_only=True, device=job.device)
    x, y, t = sel.x, sel.y, sel.targets
    interp = get_interpreter(job.interpreter, model)
    labels_of = {a: (t if a in TARGETED else y) for a in job.attacks}
    base_adv = {}
    rows, skipped = [], []
    for a in job.attacks:
        t0 = time.perf_counter()
        base_adv[a] = _craft(_make(a, model, interp, job), x, labels_of[a], job)
        log(f"{a} on {job.model}: {time.perf_counter() - t0:.1f}s")
    for d in job.defenses:
        if job.time_cap is not None and time.perf_counter() - start > job.time_cap and d != "none" \
                and not d.startswith("model:"):  # the cap drops input transforms, never the model rows
            skipped.append(f"{d} (time cap)")
            continue
        if d == "none":
            for a in job.attacks:
                rows.append(_row(d, a, "white-box", model, interp, x, base_adv[a], y, labels_of[a], 1.0, job))
            continue
        if d.startswith("model:"):
            other_name = d.split(":", 1)[1]
            other = load_model(other_name, weights=job.model_weights.get(other_name), device=job.device)
            o_interp = get_interpreter(job.interpreter, other)
            clean = float((_predict(other, x, job) == y).float().mean())
            for a in job.attacks:
                t0 = time.perf_counter()
                xa = _craft(_make(a, other, o_interp, job), x, labels_of[a], job)
                rows.append(_row(d, a, "white-box", other, o_interp, x, xa, y, labels_of[a], clean, job))
                log(f"{a} on {d}: {time.perf_counter() - t0:.1f}s")
            continue
        transform = get_defense(d, **({"seed": job.seed + 1} if d == "rp" else {}))
        system = ThroughTransform(model, transform)
        s_interp = get_interpreter(job.interpreter, system)
        clean = float((_predict(system, x, job) == y).float().mean())
        for a in job.attacks:
            rows.append(_row(d, a, "transfer", system, s_interp, x, base_adv[a], y, labels_of[a], clean, job))
            if job.adaptive:
                t0 = time.perf_counter()
                attack_view = ThroughTransform(model, get_defense(d, **({"seed": job.seed + 2} if d == "rp" else {})))
                xa = _craft(_make(a, attack_view, get_interpreter(job.interpreter, attack_view), job), x,
                            labels_of[a], job)
                rows.append(_row(d, a, "adaptive", system, s_interp, x, xa, y, labels_of[a], clean, job))
                log(f"adaptive {a} through {d}: {time.perf_counter() - t0:.1f}s")
    return {"config": job.config(), "rows": rows, "skipped": skipped, "seconds": round(time.perf_counter() - start, 1)}
