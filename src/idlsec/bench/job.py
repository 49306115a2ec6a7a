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

from ..data import load_dataset_for, select_images
from ..errors import ConfigError
from ..metrics import DEFAULT_K_GRID
from ..metrics.edges import default_edge_threshold
from ..runtime import default_device
from ..spec import AttackSpec, build, model_card
from .kinds import answering_system, monitor_fields, monitor_summary, watch_first_fool
from .records import records_from_result, summarize


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
    # a user model's load_model options, a folder dataset's load_dataset options (only those set),
    # and whether misclassified images are kept
    model_options: dict = field(default_factory=dict)
    data_options: dict = field(default_factory=dict)
    all_images: bool = False
    interpreter_params: dict = field(default_factory=dict)  # e.g. {"weights": PATH} for rts
    # black-box: a stateful monitor in the oracle, recorded only ({name, **params}, a suite's
    # ``monitor``; ``detector: PATH`` puts a saved detector in front)
    monitor: dict = field(default_factory=dict)

    def config(self) -> dict:
        d = asdict(self)
        d["k_grid"] = list(self.k_grid)
        for key in ("model_options", "data_options", "all_images", "interpreter_params", "monitor"):  # when used
            if not d[key]:
                del d[key]
        return d


    def spec(self) -> AttackSpec:
        """The attack this job runs (``rp`` inside the oracle is seeded with the job's seed)."""
        return AttackSpec(model=self.model, attack=self.attack, interpreter=self.interpreter,
                          params=dict(self.params), eps=self.eps, targeted=self.targeted, seed=self.seed,
                          surrogates=tuple(self.surrogate), max_queries=self.max_queries,
                          defense=self.defense, defense_params={"seed": self.seed} if self.defense == "rp" else {},
                          weights=self.weights, model_options=dict(self.model_options), device=self.device,
                          interpreter_params=dict(self.interpreter_params),
                          monitor=dict(self.monitor) if self.monitor else None)


def check_job(job: AttackJob):
    """Validate names and combinations before any heavy work."""
    spec = job.spec()
    spec.check()
    if not spec.black_box and job.defense is not None:
        raise ConfigError(f"--defense puts an input transform inside a black-box oracle; {job.attack} is "
                          "white-box (benchmark a defended white-box system with a suite's defenses)")
    dataset = model_card(job.model, **job.model_options).dataset
    if not job.dataset.startswith("folder:") and dataset and job.dataset != dataset:
        raise ConfigError(f"model {job.model} is trained on {dataset}, not {job.dataset}")
    if job.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {job.batch_size}")


def run_attack_job(job: AttackJob, out_dir: str | os.PathLike | None = None, *, progress: bool = True,
                   callback=None) -> dict:
    """Run the job; with ``out_dir`` write summary.json, results.jsonl, examples.png and
    adversarial.safetensors. Returns {"summary", "records", "results"}."""
    check_job(job)
    torch.manual_seed(job.seed)
    spec = job.spec()
    from ..spec import load_victim

    model = load_victim(spec)
    dataset = load_dataset_for(model, job.dataset, job.split, **job.data_options)
    sel = select_images(dataset, job.n, seed=job.seed, model=model, correct_only=not job.all_images,
                        device=job.device)
    built = build(spec, model=model, progress=progress)
    attack = built.attack
    labels = sel.targets if job.targeted else sel.y
    records, results = [], []
    start = time.perf_counter()
    for b in range(0, job.n, job.batch_size):
        sl = slice(b, b + job.batch_size)
        if callback is not None:
            attack.callback = lambda i, total, b=b: callback(b, job.n, i, total)
        if job.monitor:  # each stream's first fooling query beside its first flag
            watch_first_fool(attack, answering_system(built.model, built.defense), labels[sl], job.targeted)
        res = attack.run(sel.x[sl].to(job.device), labels[sl].to(job.device))
        recs = records_from_result(res, sel.indices[sl].tolist(), k_grid=job.k_grid, true_labels=sel.y[sl],
                                   edge_threshold=default_edge_threshold(job.interpreter))
        if job.monitor:
            recs = [{**r, **m} for r, m in zip(recs, monitor_fields(attack, len(recs)))]
        records += recs
        results.append(res)
    summary = summarize(records, k_grid=job.k_grid)
    if job.monitor:
        summary["monitor"] = monitor_summary(records)
    if "transfer_success_mean" in summary:   # black-box attacks: success on the surrogates
        summary["transfer_asr"] = summary["transfer_success_mean"]
    summary["wall_seconds"] = time.perf_counter() - start
    summary["config"] = job.config()
    summary["selection"] = {k: v for k, v in sel.report.items() if k != "unreadable_files"}
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
