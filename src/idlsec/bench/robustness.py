"""Robustness jobs of a suite (``robustness:`` entries): a defended model under attack
(:func:`~idlsec.bench.defense.run_defense_job`) plus the clean and PGD-10 accuracy of chosen
models, e.g. an adversarially trained one; and :func:`idls_attack_summary`, a targeted IDLS
attack (ADV^2, AdvEdge, ...) built through :func:`idlsec.build_attack`: its success rate and the
top-k IoU between adversarial and benign maps, over successes and over all images (``idlsec
robustness``, benchmarks/robust_zoo.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .defense import DefenseJob


@dataclass
class RobustnessJob(DefenseJob):
    """A defended model under attack (:class:`~idlsec.bench.defense.DefenseJob`: input transforms,
    transfer and adaptive, and ``model:<zoo name>`` defenses), plus the clean accuracy on
    ``clean_n`` and the PGD-10 accuracy (eps 8/255, random start) on ``robust_n`` seeded random
    test images (of its own dataset) of each of ``accuracy_models`` (e.g. an adversarially
    trained model). An empty ``defenses`` runs the accuracy part alone."""

    accuracy_models: tuple = ()
    clean_n: int = 1000
    robust_n: int = 200


def run_robustness_job(job: RobustnessJob, *, log=print) -> dict:
    from ..data import load_dataset
    from ..defenses.robustness import pgd_accuracy
    from ..models import get_card, load_model
    from ..train.evaluate import model_accuracy
    from .defense import run_defense_job

    start = time.perf_counter()
    models = []
    if job.accuracy_models:
        splits: dict = {}
        for name in job.accuracy_models:  # each on the test split of its own dataset
            ds = get_card(name).dataset
            if ds not in splits:
                splits[ds] = load_dataset(ds, "test")
            test = splits[ds]
            m = load_model(name, weights=job.model_weights.get(name), device=job.device)
            clean = model_accuracy(m, test, n=job.clean_n, device=job.device)
            x, y = test.get(test.sample(job.robust_n, seed=job.seed))
            rob = pgd_accuracy(m, x, y, steps=10, seed=job.seed)
            models.append({"model": name, "clean_accuracy": clean, "n_clean": job.clean_n,
                           "robust_accuracy": rob["robust_accuracy"], "n_robust": job.robust_n})
            log(f"accuracy of {name}: clean {clean:.3f}, PGD-10 {rob['robust_accuracy']:.3f}")
    out = {"rows": [], "skipped": []}
    if job.defenses:
        left = None if job.time_cap is None else max(1.0, job.time_cap - (time.perf_counter() - start))
        dj = DefenseJob(**{f: getattr(job, f) for f in DefenseJob.__dataclass_fields__})
        dj.time_cap = left
        out = run_defense_job(dj, log=log)
    return {**out, "config": job.config(), "models": models,
            "seconds": round(time.perf_counter() - start, 1)}


def idls_attack_summary(model_spec: str, attack: str, x: torch.Tensor, y: torch.Tensor, *,
                        interpreter: str = "cam", eps: float = 8 / 255, params: dict | None = None,
                        model=None, model_options: dict | None = None, seed: int = 0,
                        device: str = "cpu", k: float = 0.25, per_image: bool = False) -> dict:
    """Targeted IDLS attack ``attack`` on (x, targets drawn != y, seeded): ASR and the top-k IoU
    of adversarial vs benign maps, over successes and over all images; ``per_image``: also the
    lists ``"targets"``, ``"success"`` and ``"iou"``."""
    from ..metrics import topk_iou
    from ..spec import AttackSpec, build_attack

    gen = torch.Generator().manual_seed(seed)
    n_classes = int(model(x[:1]).shape[1]) if model is not None else 10
    shift = torch.randint(1, n_classes, y.shape, generator=gen).to(y.device)
    targets = (y + shift) % n_classes
    spec = AttackSpec(model=model_spec, attack=attack, interpreter=interpreter, eps=eps, targeted=True,
                      seed=seed, params=dict(params or {}), model_options=dict(model_options or {}),
                      device=device)
    atk = build_attack(spec, model=model)
    start = time.perf_counter()
    res = atk.run(x, targets)
    iou = topk_iou(res.adv_map, res.benign_map, k)
    ok = res.success
    out = {"attack": attack, "interpreter": interpreter, "n": int(x.shape[0]), "eps": eps,
           "params": spec.params, "asr": float(ok.float().mean()),
           f"iou@{k:g}_all": float(iou.mean()),
           f"iou@{k:g}_successes": float(iou[ok].mean()) if ok.any() else None,
           "seconds": round(time.perf_counter() - start, 1)}
    if per_image:
        out["targets"], out["success"], out["iou"] = targets.tolist(), ok.tolist(), iou.tolist()
    return out
