"""One attack job: a model, a dataset, an interpreter and an attack on n seeded images.
``idlsec attack``, the benchmark runner and the lab all run attacks through this."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..attacks import ATTACKS, attack_class, make_attack
from ..data import load_dataset, select_images
from ..errors import ConfigError
from ..interpreters import get_interpreter
from ..metrics import DEFAULT_K_GRID
from ..metrics.edges import default_edge_threshold
from ..models import get_card, load_model
from .records import records_from_result, summarize


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class AttackJob:
    model: str
    dataset: str
    interpreter: str
    attack: str
    n: int = 8
    seed: int = 0
    split: str = "test"
    targeted: bool = True
    eps: float = 8 / 255
    params: dict = field(default_factory=dict)  # extra attack hyperparameters (steps, alpha, ...)
    batch_size: int = 32
    device: str = field(default_factory=default_device)
    weights: str | None = None
    k_grid: tuple = DEFAULT_K_GRID
    # black-box attacks only (``black_box = True``): local surrogate model names, the oracle's
    # per-image query budget, and an input-transform defense inside the oracle
    surrogate: list = field(default_factory=list)
    max_queries: int | None = None
    defense: str | None = None

    def config(self) -> dict:
        d = asdict(self)
        d["k_grid"] = list(self.k_grid)
        return d


def check_job(job: AttackJob):
    """Validate names and combinations before any heavy work."""
    from ..errors import unknown_name
    from ..interpreters import INTERPRETERS

    card = get_card(job.model)
    attack_class(job.attack, job.params)
    if job.interpreter not in INTERPRETERS:
        raise unknown_name("interpreter", job.interpreter, INTERPRETERS)
    if not job.dataset.startswith("folder:") and job.dataset != card.dataset:
        raise ConfigError(f"model {job.model} is trained on {card.dataset}, not {job.dataset}")
    if job.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {job.batch_size}")
    if ATTACKS[job.attack].black_box:
        if not job.surrogate:
            raise ConfigError(f"{job.attack} is a black-box attack: give --surrogate MODEL[,MODEL2]")
        for name in job.surrogate:
            if get_card(name).dataset != card.dataset:
                raise ConfigError(f"surrogate {name} is trained on {get_card(name).dataset}, not {card.dataset}")
    elif job.surrogate or job.max_queries is not None or job.defense is not None:
        raise ConfigError(f"surrogate, max_queries and defense apply to black-box attacks only, not {job.attack}")


def _black_box_attack(job: AttackJob, model, interp, progress):
    """The oracle (with the target's interpreter exposed, and any defense inside) and the attack
    built on it: black-box attacks get the oracle, never the model."""
    from ..attacks import BlackBox
    from ..defenses import get_defense

    defense = get_defense(job.defense, **({"seed": job.seed} if job.defense == "rp" else {})) if job.defense else None
    oracle = BlackBox(model, output="probs", interpreter=interp, defense=defense,
                      max_queries=job.max_queries if job.max_queries is not None else 10_000)
    surrogates = [load_model(s, device=job.device) for s in job.surrogate]
    params = dict(job.params)
    if job.max_queries is not None:
        params.setdefault("max_queries", job.max_queries)
    return make_attack(job.attack, oracle, None, surrogates=surrogates, eps=job.eps, targeted=job.targeted,
                       seed=job.seed, progress=progress, **params)


def run_attack_job(job: AttackJob, out_dir: str | os.PathLike | None = None, *, progress: bool = True,
                   callback=None) -> dict:
    """Run the job; with ``out_dir`` write summary.json, results.jsonl, examples.png and
    adversarial.safetensors. Returns {"summary", "records", "results"}."""
    check_job(job)
    torch.manual_seed(job.seed)
    model = load_model(job.model, weights=job.weights, device=job.device)
    dataset = load_dataset(job.dataset, job.split)
    sel = select_images(dataset, job.n, seed=job.seed, model=model, correct_only=True, device=job.device)
    interp = get_interpreter(job.interpreter, model)
    black_box = ATTACKS[job.attack].black_box
    if black_box:
        attack = _black_box_attack(job, model, interp, progress)
    else:
        attack = make_attack(job.attack, model, interp, eps=job.eps, targeted=job.targeted, seed=job.seed,
                             progress=progress, **job.params)
    labels = sel.targets if job.targeted else sel.y
    records, results = [], []
    start = time.perf_counter()
    for b in range(0, job.n, job.batch_size):
        sl = slice(b, b + job.batch_size)
        if callback is not None:
            attack.callback = lambda i, total, b=b: callback(b, job.n, i, total)
        res = attack.run(sel.x[sl].to(job.device), labels[sl].to(job.device))
        if black_box:  # the evaluator's view: the target's maps on the undefended model
            res.benign_map, res.adv_map = interp(res.x), interp(res.x_adv)
        records += records_from_result(res, sel.indices[sl].tolist(), k_grid=job.k_grid, true_labels=sel.y[sl],
                                       edge_threshold=default_edge_threshold(job.interpreter))
        results.append(res)
    summary = summarize(records, k_grid=job.k_grid)
    if black_box and "transfer_success_mean" in summary:
        summary["transfer_asr"] = summary["transfer_success_mean"]
    summary["wall_seconds"] = time.perf_counter() - start
    summary["config"] = job.config()
    if out_dir is not None:
        write_job_outputs(Path(out_dir), summary, records, results, dataset.classes)
    return {"summary": summary, "records": records, "results": results}


def write_job_outputs(out: Path, summary: dict, records: list[dict], results, classes):
    from ..report.figures import example_grid

    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    with open(out / "results.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    cat = lambda key: torch.cat([getattr(r, key).detach().cpu() for r in results])  # noqa: E731
    tensors = {"images": cat("x"), "adversarial": cat("x_adv"), "pred": cat("pred"), "labels": cat("labels")}
    if results[0].benign_map is not None:
        tensors.update(benign_maps=cat("benign_map"), adversarial_maps=cat("adv_map"))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "adversarial.safetensors"))
    name = lambda c: classes[c] if 0 <= c < len(classes) else str(c)  # noqa: E731
    titles_b = [name(r["label"]) for r in records]
    titles_a = [f"{name(r['pred'])} {r['confidence']:.2f}" for r in records]
    example_grid(out / "examples.png", tensors["images"], tensors["adversarial"], tensors.get("benign_maps"),
                 tensors.get("adversarial_maps"), titles_benign=titles_b, titles_adv=titles_a)
