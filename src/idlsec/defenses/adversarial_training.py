"""Adversarial training: plain PGD (Madry et al., ICLR 2018), TRADES (Zhang et al., ICML 2019),
FGSM with random start and a cyclic learning rate ("fast is better than free", Wong et al., ICLR
2020) and interpretation-aware adversarial training.

TRADES minimises CE(f(x), y) + β·KL(f(x) ‖ f(x̂)), x̂ = PGD-10 ascending that KL from
x + 0.001·N(0, I) (the authors' code: step 2/255, β = 6 for CIFAR-10); the clean and the
adversarial batches are separate forwards in train mode, as in the released code.
Learning-rate schedules: ``cosine`` (to 0 over all steps; the default but for FGSM) and ``cyclic``
(Wong et al.: a triangle from 0 up to ``lr`` at 2/5 of the steps and down to 0; FGSM's default),
evaluated at the middle of each step.

Interpretation-aware training (ALGORITHMS.md §7, in the spirit of ADV^2's AID) is a min-max
problem whose inner step is an IDLS attack and whose outer loss keeps the adversarial map close
to the benign one:

    min_θ  E [ CE(f_θ(x̂), y) + map_weight · mean (g_θ(x̂, y) − g_θ(x, y))² ],
    x̂ = MapPGD(x): a few sign steps ascending CE(f(x̂), y) − λ·mean (g(x̂, ĉ) − g(x, y))²,

where ĉ is the class the system currently predicts for x̂ (the map it would show) and g is a
min-max-normalised interpreter (CAM by default: differentiable in θ and cheap). The full ADV^2 is
far too slow for an inner loop; MapPGD keeps its objective with few steps. The benign map in the
outer loss is detached (a fixed target, as in the attack).

``AdversarialTrainer.fit`` checkpoints after every epoch (safetensors with the weights, the
optimiser's momentum buffers and the RNG states; JSON with the step counters and history, each
written atomically) and ``resume=True`` continues to the same result as an uninterrupted run.
With ``val=(x, y)`` it measures clean and PGD-10 accuracy on those images after every epoch
(:func:`idlsec.defenses.robustness.pgd_accuracy`) and keeps the weights of the epoch with the best
validation robust accuracy (``best_state``; ``best.safetensors`` beside the checkpoint)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..attacks import PGD, Attack
from ..attacks.base import project_linf
from ..errors import ConfigError, InputError, ResourceError
from ..interpreters import Interpreter, get_interpreter
from ..metrics.losses import exact_cross_entropy
from ..validation import check_choice, check_images, check_int, check_labels, check_positive

DEFENSES = ("adv", "pgd", "fgsm", "trades")
LR_SCHEDULES = ("cosine", "cyclic")
CHECKPOINT_JSON = "checkpoint.json"


class MapPGD(Attack):
    """Interpretation-aware PGD, the fast inner attack of interpretation-aware training.

    Untargeted: ascend CE(f(x̂), y) − map_lambda·mean (g(x̂, ĉ) − m_benign)², ĉ the prediction at the
    previous step; targeted (y = targets): descend CE(f(x̂), y) + map_lambda·mean (g(x̂, y) − m)²,
    i.e. ADV^2's joint stage with few steps. Defaults: eps 8/255, alpha 2/255, 5 steps, random
    start, map_lambda 5 (ADV^2's c0 for CAM)."""

    name = "map-pgd"
    needs_interpreter = True

    def __init__(self, model, interpreter=None, *, eps=8 / 255, alpha=2 / 255, steps=5, map_lambda=5.0,
                 random_start=True, targeted=False, seed=0, progress=False, callback=None):
        super().__init__(model, interpreter, eps=eps, targeted=targeted, seed=seed, progress=progress,
                         callback=callback)
        self.alpha, self.steps, self.map_lambda, self.random_start = alpha, steps, map_lambda, random_start
        self._check_params()

    def _check_params(self):
        super()._check_params()
        check_positive("alpha", self.alpha, upper=1.0)
        check_int("steps", self.steps, minimum=1)
        check_positive("map_lambda", self.map_lambda, allow_zero=True)

    def _run(self, x, y, target_map):
        x_adv = x.clone()
        if self.random_start:
            noise = torch.rand(x.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype)
            x_adv = (x + (2 * noise - 1) * self.eps).clamp_(0, 1)
        shown = y.clone()
        losses = []
        for _ in self._steps(self.steps):
            x_adv.requires_grad_(True)
            logits, maps = self.interpreter.logits_and_maps(x_adv, y if self.targeted else shown)
            map_term = (maps - target_map).pow(2).flatten(1).mean(1).mean()
            ce = exact_cross_entropy(logits, y, reduction="mean")
            loss = ce + self.map_lambda * map_term if self.targeted else -ce + self.map_lambda * map_term
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = project_linf(x_adv.detach() - self.alpha * grad.sign(), x, self.eps)
            shown = logits.detach().argmax(1)
            losses.append(loss.detach())
        return x_adv, {"steps": self.steps, "loss_history": torch.stack(losses).tolist()}


class TradesPGD(Attack):
    """TRADES' inner maximisation (Zhang et al., 2019): sign steps ascending KL(f(x) ‖ f(x̂)) from
    x + 0.001·N(0, I), projected on the L∞ ball. Defaults (the authors' CIFAR-10 code): eps 8/255,
    alpha 2/255, 10 steps. ``y`` is unused (the clean prediction is the reference)."""

    name = "trades-pgd"

    def __init__(self, model, interpreter=None, *, eps=8 / 255, alpha=2 / 255, steps=10, seed=0,
                 progress=False, callback=None):
        super().__init__(model, interpreter, eps=eps, targeted=False, seed=seed, progress=progress,
                         callback=callback)
        self.alpha, self.steps = alpha, steps
        self._check_params()

    def _check_params(self):
        super()._check_params()
        check_positive("alpha", self.alpha, upper=1.0)
        check_int("steps", self.steps, minimum=1)

    def _run(self, x, y, target_map=None):
        with torch.no_grad():
            p_clean = F.softmax(self.model(x), 1)
        noise = torch.randn(x.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype)
        x_adv = (x + 0.001 * noise).clamp(0, 1)
        for _ in self._steps(self.steps):
            x_adv.requires_grad_(True)
            loss = trades_kl(self.model(x_adv), p_clean)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = project_linf(x_adv.detach() + self.alpha * grad.sign(), x, self.eps)
        return x_adv, {"steps": self.steps}


def trades_kl(logits_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """KL(p_clean ‖ softmax(logits_adv)) summed over classes, averaged over the batch."""
    return F.kl_div(F.log_softmax(logits_adv, 1), p_clean, reduction="batchmean")


class _Tensors:
    """(x, y) tensors with the Dataset ``get``/``len`` interface."""

    def __init__(self, x, y):
        check_images(x, name="train x")
        self.x, self.y = x, check_labels(y, x.shape[0], name="train y")

    def __len__(self):
        return self.x.shape[0]

    def get(self, idx):
        return self.x[idx], self.y[idx]


def _augment(x, gen, pad=4):
    """Random horizontal flip and a random crop from a zero-padded image, per sample (seeded)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if pad:
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
        padded = padded.gather(2, rows)
        cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
        x = padded.gather(3, cols)
    return x


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class AdversarialTrainer:
    """Min-max training of ``model`` (trained in place; its parameters are unfrozen while training
    and frozen again afterwards, in eval mode).

    ``attack``: ``"adv"`` (MapPGD inner step + map term, the default ``map_weight`` 1.0),
    ``"pgd"`` (Madry: PGD-``steps`` with random start, alpha 2/255), ``"fgsm"`` (one step of
    1.25·eps from a random start), ``"trades"`` (TradesPGD-10 inner step, outer loss
    CE + ``beta``·KL, beta 6), or any ``Attack`` instance (its ``_run`` is called in eval mode).
    Optimiser: SGD (momentum 0.9, weight decay 5e-4); ``lr_schedule`` ``"cosine"`` (from ``lr`` to
    0 over all steps) or ``"cyclic"`` (0 → ``lr`` at 2/5 of the steps → 0); default cyclic for
    fgsm, cosine otherwise. ``steps_per_epoch`` limits an epoch to that many batches (small CPU budgets).
    ``clean_weight`` w mixes in the clean loss, (1 − w)·CE(x̂) + w·CE(x) (Goodfellow et al., 2015;
    default 0, Madry's pure adversarial loss); it keeps clean accuracy in short fine-tuning runs."""

    def __init__(self, model: nn.Module, attack="adv", *, map_weight: float | None = None,
                 interpreter: str | Interpreter = "cam", eps: float = 8 / 255, alpha: float | None = None,
                 steps: int | None = None, map_lambda: float = 5.0, epochs: int = 1, lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 128,
                 steps_per_epoch: int | None = None, augment: bool = True, clean_weight: float = 0.0,
                 beta: float = 6.0, lr_schedule: str | None = None, seed: int = 0, progress: bool = True,
                 callback=None):
        self.model = model
        self.kind = attack if isinstance(attack, str) else "custom"
        if isinstance(attack, str):
            check_choice("attack", attack, DEFENSES)
        elif not isinstance(attack, Attack):
            raise ConfigError(f"attack must be one of {', '.join(DEFENSES)} or an Attack, got {type(attack).__name__}")
        check_positive("eps", eps, upper=1.0)
        self.map_weight = (1.0 if self.kind == "adv" else 0.0) if map_weight is None else map_weight
        self.clean_weight = check_positive("clean_weight", clean_weight, allow_zero=True, upper=1.0)
        check_positive("map_weight", self.map_weight, allow_zero=True)
        for name, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            check_positive(name, v, allow_zero=name != "lr")
        self.beta = check_positive("beta", beta, allow_zero=True)
        self.lr_schedule = lr_schedule or ("cyclic" if self.kind == "fgsm" else "cosine")
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        self.epochs = check_int("epochs", epochs, minimum=1)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        if steps_per_epoch is not None:
            check_int("steps_per_epoch", steps_per_epoch, minimum=1)
        self.steps_per_epoch, self.augment, self.seed = steps_per_epoch, augment, seed
        self.lr, self.momentum, self.weight_decay, self.eps = lr, momentum, weight_decay, eps
        self.progress, self.callback = progress, callback
        need_interp = self.kind == "adv" or self.map_weight > 0
        if isinstance(interpreter, Interpreter):
            self.interpreter = interpreter
        else:
            self.interpreter = get_interpreter(interpreter, model) if need_interp else None
        if self.kind == "adv":
            self.attack = MapPGD(model, self.interpreter, eps=eps, alpha=alpha or 2 / 255, steps=steps or 5,
                                 map_lambda=map_lambda)
        elif self.kind == "pgd":
            self.attack = PGD(model, eps=eps, alpha=alpha or 2 / 255, steps=steps or 7, random_start=True)
        elif self.kind == "trades":
            self.attack = TradesPGD(model, eps=eps, alpha=alpha or 2 / 255, steps=steps or 10)
        elif self.kind == "fgsm":
            self.attack = PGD(model, eps=eps, alpha=alpha or 1.25 * eps, steps=steps or 1, random_start=True)
        else:
            self.attack = attack
        self.params = [p for p in model.parameters()]
        self.opt = torch.optim.SGD(self.params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict] = []
        self.best_state: dict | None = None

    # --- configuration --------------------------------------------------------------------------
    def config(self) -> dict:
        card = getattr(self.model, "card", None)
        return {"defense": self.kind, "model": card.name if card is not None else type(self.model).__name__,
                "attack": type(self.attack).__name__,
                "attack_params": {k: v for k, v in self.attack.get_params().items() if k not in ("seed", "progress")},
                "map_weight": self.map_weight, "eps": self.eps,
                "epochs": self.epochs, "lr": self.lr, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                "steps_per_epoch": self.steps_per_epoch, "augment": self.augment,
                "clean_weight": self.clean_weight, "beta": self.beta if self.kind == "trades" else None,
                "lr_schedule": self.lr_schedule, "seed": self.seed,
                "interpreter": self.interpreter.name if self.interpreter is not None else None}

    def _lr_at(self, step: int, total: int) -> float:
        if self.lr_schedule == "cyclic":  # Wong et al. 2020: triangle peaking at 2/5, mid-step
            t, peak = (step + 0.5) / total, 0.4
            return self.lr * (t / peak if t <= peak else (1 - t) / (1 - peak))
        return self.lr * 0.5 * (1 + math.cos(math.pi * step / total))

    # --- training ---------------------------------------------------------------------------------
    def fit(self, data, y: torch.Tensor | None = None, *, checkpoint_dir: str | Path | None = None,
            resume: bool = False, val: tuple | None = None, val_steps: int = 10) -> list[dict]:
        """Train on ``data`` (an idlsec Dataset, or image tensor ``data`` with labels ``y``) for the
        remaining epochs; returns the per-epoch history. ``val=(x, y)``: after every epoch, clean
        and PGD-``val_steps`` accuracy on them (``val_clean``, ``val_robust`` in the history) and
        the weights of the best epoch by ``val_robust`` (ties: the later) in ``best_state``."""
        if y is not None or isinstance(data, torch.Tensor):
            if y is None:
                raise InputError("fit(x, y): labels are missing")
            data = _Tensors(data, y)
        if resume:
            if checkpoint_dir is None:
                raise ConfigError("resume=True needs a checkpoint_dir")
            if (Path(checkpoint_dir) / CHECKPOINT_JSON).is_file():
                self.load_checkpoint(checkpoint_dir)
        n = len(data)
        per_epoch = math.ceil(n / self.batch_size)
        if self.steps_per_epoch is not None:
            per_epoch = min(per_epoch, self.steps_per_epoch)
        total = per_epoch * self.epochs
        dev = self.params[0].device
        for p in self.params:
            p.requires_grad_(True)
        try:
            while self.epoch < self.epochs:
                start = time.perf_counter()
                order = torch.randperm(n, generator=self.gen)
                sums = {"loss": 0.0, "ce": 0.0, "map": 0.0, "adv_acc": 0.0, "count": 0}
                bar = tqdm(range(per_epoch), desc=f"{self.kind} epoch {self.epoch + 1}/{self.epochs}",
                           disable=not self.progress, leave=False)
                for b in bar:
                    xb, yb = data.get(order[b * self.batch_size:(b + 1) * self.batch_size])
                    if self.augment:
                        xb = _augment(xb, self.gen)
                    seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=self.gen))
                    stats = self._step(xb.to(dev), yb.to(dev), seed, self._lr_at(self.global_step, total))
                    self.global_step += 1
                    k = xb.shape[0]
                    for key in ("loss", "ce", "map", "adv_acc"):
                        sums[key] += stats[key] * k
                    sums["count"] += k
                    bar.set_postfix(loss=f"{stats['loss']:.3f}", adv_acc=f"{stats['adv_acc']:.2f}")
                    if self.callback is not None:
                        self.callback(self.global_step, total)
                self.epoch += 1
                c = max(sums.pop("count"), 1)
                row = {"epoch": self.epoch, **{k: v / c for k, v in sums.items()},
                       "seconds": round(time.perf_counter() - start, 2)}
                if val is not None:
                    row.update(self._validate(val, val_steps))
                self.history.append(row)
                if checkpoint_dir is not None:
                    self.save_checkpoint(checkpoint_dir)
        finally:
            for p in self.params:
                p.requires_grad_(False)
            self.model.eval()
        return self.history

    def _validate(self, val, steps) -> dict:
        """Clean and PGD-``steps`` accuracy on ``val``; keeps the weights if the best so far."""
        from .robustness import pgd_accuracy

        res = pgd_accuracy(self.model, val[0], val[1], eps=self.eps, steps=steps, seed=self.seed)
        best = max((r["val_robust"] for r in self.history if "val_robust" in r), default=-1.0)
        if res["robust_accuracy"] >= best:
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return {"val_clean": res["clean_accuracy"], "val_robust": res["robust_accuracy"], "val_n": res["n"],
                "val_attack": res["attack"]}

    def best_epoch(self) -> int | None:
        """The epoch whose weights are ``best_state`` (the best ``val_robust``, ties: the later)."""
        rows = [r for r in self.history if "val_robust" in r]
        return max(rows, key=lambda r: (r["val_robust"], r["epoch"]))["epoch"] if rows else None

    def _step(self, x, y, seed, lr) -> dict:
        self.model.eval()
        self.attack.seed = seed
        benign_map = None
        interp = self.interpreter if self.interpreter is not None else self.attack.interpreter
        if interp is not None:
            with torch.no_grad():
                benign_map = interp.logits_and_maps(x, y, create_graph=False)[1]
        with torch.enable_grad():
            x_adv, _ = self.attack._run(x, y, benign_map)
        x_adv = project_linf(x_adv.detach(), x, self.eps)
        self.model.train()
        for g in self.opt.param_groups:
            g["lr"] = lr
        if self.kind == "trades":
            return self._trades_update(x, x_adv, y)
        xin = torch.cat([x_adv, x]) if self.clean_weight > 0 else x_adv
        if self.map_weight > 0:
            logits, maps = self.interpreter.logits_and_maps(xin, y.repeat(xin.shape[0] // y.shape[0]),
                                                            create_graph=True)
            map_loss = (maps[:x.shape[0]] - benign_map).pow(2).flatten(1).mean(1).mean()
        else:
            logits, map_loss = self.model(xin), torch.zeros((), device=x.device)
        ce = exact_cross_entropy(logits[:x.shape[0]], y, reduction="mean")
        if self.clean_weight > 0:
            ce = (1 - self.clean_weight) * ce + self.clean_weight * exact_cross_entropy(logits[x.shape[0]:], y,
                                                                               reduction="mean")
        logits = logits[:x.shape[0]]
        loss = ce + self.map_weight * map_loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach()), "ce": float(ce.detach()), "map": float(map_loss.detach()),
                "adv_acc": float((logits.argmax(1) == y).float().mean())}

    def _trades_update(self, x, x_adv, y) -> dict:
        """TRADES' outer loss: CE(f(x), y) + β·KL(f(x) ‖ f(x̂)), clean and adversarial forwards apart."""
        logits = self.model(x)
        logits_adv = self.model(x_adv)
        ce = exact_cross_entropy(logits, y, reduction="mean")
        kl = trades_kl(logits_adv, F.softmax(logits, 1))
        loss = ce + self.beta * kl
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": float(loss.detach()), "ce": float(ce.detach()), "map": 0.0,
                "adv_acc": float((logits_adv.argmax(1) == y).float().mean())}

    # --- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, directory: str | Path) -> Path:
        """Write ``epoch-NNN.safetensors`` then ``checkpoint.json`` (each atomically); older epoch
        files are removed only once the JSON points to the new one."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        for i, p in enumerate(self.params):
            buf = self.opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"optim.{i}.momentum_buffer"] = buf.detach().cpu().contiguous()
        tensors["rng.generator"] = self.gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        name = f"epoch-{self.epoch:03d}.safetensors"
        _atomic_write(directory / name, lambda p: save_file(tensors, str(p)))
        state = {"format": "idlsec-adversarial-training/1", "epoch": self.epoch, "global_step": self.global_step,
                 "weights": name, "sha256": _sha256(directory / name), "history": self.history,
                 "config": self.config(), "param_groups": [{k: v for k, v in g.items() if k != "params"}
                                                           for g in self.opt.param_groups]}
        if self.best_state is not None:
            best = {k: v.detach().cpu().contiguous() for k, v in self.best_state.items()}
            _atomic_write(directory / "best.safetensors", lambda p: save_file(best, str(p)))
            state["best"] = {"epoch": self.best_epoch(), "weights": "best.safetensors",
                             "sha256": _sha256(directory / "best.safetensors")}
        _atomic_write(directory / CHECKPOINT_JSON, lambda p: p.write_text(json.dumps(state, indent=2) + "\n"))
        for old in directory.glob("epoch-*.safetensors"):
            if old.name != name:
                old.unlink()
        return directory / CHECKPOINT_JSON

    def load_checkpoint(self, directory: str | Path) -> dict:
        directory = Path(directory)
        meta_path = directory / CHECKPOINT_JSON
        if not meta_path.is_file():
            raise ResourceError(f"no checkpoint in {directory} ({CHECKPOINT_JSON} missing)")
        state = json.loads(meta_path.read_text())
        weights = directory / state["weights"]
        if not weights.is_file() or _sha256(weights) != state["sha256"]:
            raise ResourceError(f"checkpoint {weights} is missing or does not match its sha256")
        for key in ("defense", "batch_size", "seed", "epochs", "steps_per_epoch", "lr_schedule", "beta"):
            if key in state["config"] and state["config"][key] != self.config()[key]:
                raise ConfigError(f"checkpoint in {directory} was made with {key}={state['config'].get(key)!r}, "
                                  f"this run has {self.config()[key]!r}")
        tensors = load_file(str(weights))
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(model_state)
        dev = self.params[0].device
        for i, p in enumerate(self.params):
            buf = tensors.get(f"optim.{i}.momentum_buffer")
            if buf is not None:
                self.opt.state[p]["momentum_buffer"] = buf.to(dev)
        for g, saved in zip(self.opt.param_groups, state["param_groups"]):
            g.update(saved)
        self.gen.set_state(tensors["rng.generator"])
        torch.set_rng_state(tensors["rng.torch"])
        self.epoch, self.global_step, self.history = state["epoch"], state["global_step"], state["history"]
        if "best" in state:
            best = directory / state["best"]["weights"]
            if not best.is_file() or _sha256(best) != state["best"]["sha256"]:
                raise ResourceError(f"checkpoint {best} is missing or does not match its sha256")
            self.best_state = load_file(str(best))
        return state


def train_robust_model(model_name: str, defense: str = "adv", *, out: str | Path | None = None,
                       checkpoint_dir: str | Path | None = None, resume: bool = False, init: str = "standard",
                       weights: str | None = None, eval_n: int = 1000, robust_eval_n: int = 200,
                       val_n: int = 0, device: str = "cpu", command: str | None = None, progress: bool = True,
                       **trainer_kwargs) -> dict:
    """Adversarially train (fine-tune, with ``init="standard"``) a zoo model on its training split,
    checkpointing every epoch; write ``out`` (.safetensors) and a JSON card beside it with the
    command, seed, clean accuracy (first ``eval_n`` test images) and PGD-10 robust accuracy
    (``robust_eval_n`` seeded test images, :func:`~idlsec.defenses.robustness.pgd_accuracy`).
    ``val_n`` > 0: the validation split is left out of training, clean and PGD-10 accuracy on
    ``val_n`` of its images are measured after every epoch, and the weights written are those of
    the epoch with the best validation robust accuracy (default 0: the last epoch, all of the
    training split). Returns the card."""
    from dataclasses import replace

    from ..data import load_dataset, validation_indices
    from ..data.resolve import file_digest
    from ..models import get_card, load_model
    from ..models.checkpoints import save_weights
    from ..train.evaluate import model_accuracy

    check_choice("defense", defense, DEFENSES)
    check_choice("init", init, ("standard", "random"))
    card = get_card(model_name)
    torch.manual_seed(trainer_kwargs.get("seed", 0))
    model = load_model(model_name, weights="random" if init == "random" else weights, device=device)
    train, test = load_dataset(card.dataset, "train"), load_dataset(card.dataset, "test")
    val = None
    if check_int("val_n", val_n, minimum=0):
        keep = torch.ones(len(train), dtype=torch.bool)
        keep[validation_indices(len(train))] = False
        train = replace(train, images=train.images[keep], labels=train.labels[keep])
        vs = load_dataset(card.dataset, "val")
        val = vs.get(vs.sample(min(val_n, len(vs)), seed=0))
    trainer = AdversarialTrainer(model, defense, progress=progress, **trainer_kwargs)
    start = time.perf_counter()
    history = trainer.fit(train, checkpoint_dir=checkpoint_dir, resume=resume, val=val)
    seconds = time.perf_counter() - start
    if trainer.best_state is not None:
        model.load_state_dict(trainer.best_state)
    clean = model_accuracy(model, test, n=eval_n, device=device)
    xr, yr = test.get(test.sample(robust_eval_n))
    from .robustness import pgd_accuracy

    rob = pgd_accuracy(model, xr, yr, eps=trainer.eps, steps=10)
    info = {"model": model_name, "defense": defense, "init": init, **trainer.config(),
            "test_accuracy": clean, "test_accuracy_n": min(eval_n, len(test)),
            "robust_accuracy": rob["robust_accuracy"], "robust_accuracy_n": rob["n"],
            "robust_attack": rob["attack"], "robust_rule": rob["rule"], "train_seconds": round(seconds, 1),
            "val_n": len(val[1]) if val is not None else 0, "selected_epoch": trainer.best_epoch() or trainer.epoch,
            "history": history,
            "device": device, "torch": torch.__version__, "command": command}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_weights(model.net, out, metadata={"model": model_name, "defense": defense,
                                               "test_accuracy": f"{clean:.4f}", "seed": info["seed"]})
        info["sha256"] = file_digest(out)
        out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info
