"""Universal (per source→target) perturbation jobs: what ``idlsec universal`` and
``benchmarks/singleadv.yaml`` run. Fit SingleADV on training-split images of the source class,
measure on the held-out test images of the source class and on other-class test images."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..attacks.singleadv import SingleADV
from ..data import load_dataset_for
from ..errors import ConfigError
from ..interpreters import get_interpreter
from ..metrics import DEFAULT_K_GRID, class_confidence, map_l1, topk_iou_curve
from ..models import get_card, load_model, model_card
from ..runtime import default_device


@torch.no_grad()
def _logits(model, x, batch=500):
    return torch.cat([model(x[b:b + batch]) for b in range(0, x.shape[0], batch)])


def _maps(interp, x, batch=250):
    return torch.cat([interp(x[b:b + batch]) for b in range(0, x.shape[0], batch)])


def evaluate_delta(model, interpreter, delta: torch.Tensor, *, target: int, source_images: torch.Tensor,
                   other_images: torch.Tensor | None = None, k_grid=DEFAULT_K_GRID,
                   max_map_images: int | None = None) -> dict:
    """Metrics of a universal perturbation on held-out images.

    fooling_rate: share of ``source_images`` the model now puts in ``target``;
    target_confidence_mean: mean p(target) on them; unintended_fooling_rate: share of
    ``other_images`` whose predicted label changes; iou_topk_mean / map_l1_mean: the map the system
    shows for its adversarial prediction against the benign map of its benign prediction (mean
    top-k IoU over ``k_grid``), on the source images (the first ``max_map_images`` of them)."""
    delta = delta.to(source_images.device, source_images.dtype)
    was_training = model.training
    model.eval()
    try:
        x_adv = (source_images + delta).clamp(0, 1)
        logits = _logits(model, x_adv)
        tgt = torch.full((x_adv.shape[0],), target, dtype=torch.long, device=x_adv.device)
        out = {
            "fooling_rate": float((logits.argmax(1) == target).float().mean()),
            "target_confidence_mean": float(class_confidence(logits, tgt).mean()),
            "n_source": int(source_images.shape[0]),
        }
        k = source_images.shape[0] if max_map_images is None else min(max_map_images, source_images.shape[0])
        benign = _maps(interpreter, source_images[:k])
        adv = _maps(interpreter, x_adv[:k])
        iou = topk_iou_curve(adv, benign, k_grid).mean(1)
        l1 = map_l1(adv, benign)
        fooled = logits[:k].argmax(1) == target
        out["iou_topk_mean"] = float(iou.mean())
        out["map_l1_mean"] = float(l1.mean())
        out["iou_topk_fooled_mean"] = float(iou[fooled].mean()) if fooled.any() else float("nan")
        out["map_l1_fooled_mean"] = float(l1[fooled].mean()) if fooled.any() else float("nan")
        if other_images is not None:
            before = _logits(model, other_images).argmax(1)
            after = _logits(model, (other_images + delta).clamp(0, 1)).argmax(1)
            out["unintended_fooling_rate"] = float((after != before).float().mean())
            out["unintended_to_target_rate"] = float(((after == target) & (before != target)).float().mean())
            out["n_other"] = int(other_images.shape[0])
    finally:
        model.train(was_training)
    return out


def class_images(dataset, cls: int, n: int | None, seed: int, start: int = 0):
    """Up to ``n`` images of class ``cls`` in a seeded order (all of them when n is None), from
    position ``start`` of that order on."""
    idx = (dataset.labels == cls).nonzero().squeeze(1)
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))][start:]
    return dataset.get(idx if n is None else idx[:n])[0]


def other_images(dataset, cls: int, n: int | None, seed: int, start: int = 0):
    """Up to ``n`` images of every class but ``cls``, in a seeded order (from position ``start``
    on), with their labels."""
    idx = (dataset.labels != cls).nonzero().squeeze(1)
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed + 1))][start:]
    return dataset.get(idx if n is None else idx[:n])


@dataclass
class UniversalJob:
    model: str
    dataset: str
    interpreter: str
    source: int | str
    target: int | str
    norm: str = "linf"
    eps: float | None = None
    n_train: int = 1000          # training-split source images
    n_inhibition: int = 2000     # training-split other-class images (0: no inhibition term)
    n_test: int | None = None    # test-split source images (None: all)
    n_test_other: int | None = 2000  # test-split other-class images for unintended fooling
    params: dict = field(default_factory=dict)
    transfer_to: list = field(default_factory=list)  # other models (their own ``interpreter``)
    transfer_interpreters: list = field(default_factory=list)  # the same model, other interpreters
    seed: int = 0
    device: str = field(default_factory=default_device)
    weights: str | None = None
    k_grid: tuple = DEFAULT_K_GRID
    model_options: dict = field(default_factory=dict)   # load_model options the user set
    data_options: dict = field(default_factory=dict)    # load_dataset options the user set

    def config(self) -> dict:
        d = asdict(self)
        d["k_grid"] = list(self.k_grid)
        for key in ("model_options", "data_options", "transfer_interpreters"):  # when used
            if not d[key]:
                del d[key]
        return d


def run_universal_job(job: UniversalJob, out_dir=None, *, progress: bool = False) -> dict:
    """Fit, evaluate (and transfer) one universal perturbation; with ``out_dir`` write
    delta.safetensors, summary.json and universal.png. Returns the summary."""
    card = model_card(job.model, **job.model_options)
    if not job.dataset.startswith("folder:") and job.dataset != card.dataset:
        raise ConfigError(f"model {job.model} is trained on {card.dataset}, not {job.dataset}")
    for name in job.transfer_to:
        get_card(name)
    dev = job.device
    model = load_model(job.model, weights=job.weights, device=dev, **job.model_options)
    train, test = (load_dataset_for(model, job.dataset, split, **job.data_options)
                   for split in ("train", "test"))
    if not train.labeled:
        raise ConfigError(f"{job.dataset}: a universal perturbation is fitted on the images of its "
                          "source class, and these images have no labels (--image-labels)")
    source, target = train.class_index(job.source), train.class_index(job.target)
    interp = get_interpreter(job.interpreter, model)
    atk = SingleADV(model, interp, source=source, target=target, norm=job.norm, eps=job.eps, seed=job.seed,
                    progress=progress, **job.params)
    x_train = class_images(train, source, job.n_train, job.seed).to(dev)
    xo_train = other_images(train, source, job.n_inhibition, job.seed)[0].to(dev) if job.n_inhibition else None
    # an image folder has one split: the test images are the source images the fit did not use
    skip, skip_o = (0, 0) if not job.dataset.startswith("folder:") else (
        len(x_train), len(xo_train) if xo_train is not None else 0)
    x_test = class_images(test, source, job.n_test, job.seed, skip).to(dev)
    xo_test = other_images(test, source, job.n_test_other, job.seed, skip_o)[0].to(dev)
    if not len(x_train) or not len(x_test):
        raise ConfigError(f"{job.dataset}: {len(x_train)} source images ({train.classes[source]}) "
                          f"to fit on and {len(x_test)} held-out ones to measure on; both must be "
                          "> 0" + (" (a folder's source images are split: lower n_train/--n-train)"
                                   if skip else ""))
    log = (f"{len(x_train)} {train.classes[source]} image(s) to fit, {len(x_test)} "
           f"held out, {len(xo_test)} of other classes" + (" (one folder: fit and held-out "
           "images are disjoint)" if skip else ""))
    start = time.perf_counter()
    delta = atk.fit(x_train, others=xo_train)
    seconds = time.perf_counter() - start
    res = evaluate_delta(model, interp, delta, target=target, source_images=x_test,
                         other_images=xo_test if len(xo_test) else None,
                         k_grid=job.k_grid)
    summary = {
        "fooling_rate_train": atk.fooling_rate,
        "fooling_rate_test": res.pop("fooling_rate"),
        **res,
        "converged": atk.converged,
        "iterations": atk.history[-1]["iteration"] if atk.history else 0,
        "delta_linf": float(delta.abs().max()),
        "delta_l2": float(delta.norm()),
        "eps": atk.budget(tuple(delta.shape)),
        "seconds": seconds,
        "source": train.classes[source], "target": train.classes[target],
        "params": atk.get_params(),
        "config": job.config(),
        "history": atk.history,
        "images": log,
    }
    transfers = {}
    for name in job.transfer_to:
        m2 = load_model(name, device=dev)
        i2 = get_interpreter(job.interpreter, m2)
        transfers[name] = evaluate_delta(m2, i2, delta, target=target, source_images=x_test,
                                         other_images=xo_test, k_grid=job.k_grid)
    if transfers:
        summary["transfer"] = transfers
    # the same predictions explained by another interpreter: only the map fidelity changes
    by_interp = {name: evaluate_delta(model, get_interpreter(name, model), delta, target=target,
                                      source_images=x_test, k_grid=job.k_grid)
                 for name in job.transfer_interpreters}
    if by_interp:
        summary["transfer_interpreters"] = by_interp
    if out_dir is not None:
        write_universal_outputs(Path(out_dir), summary, delta, model, interp, x_test, train.classes,
                                [(name, load_model(name, device=dev)) for name in job.transfer_to],
                                job.interpreter)
    return summary


def write_universal_outputs(out: Path, summary: dict, delta, model, interp, x_test, classes, transfer_models,
                            interpreter_name):
    from safetensors.torch import save_file

    from ..report.universal import universal_figure

    out.mkdir(parents=True, exist_ok=True)
    save_file({"delta": delta.detach().cpu().contiguous()}, str(out / "delta.safetensors"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    panels = [(summary["config"]["model"], model, interp)]
    panels += [(name, m, get_interpreter(interpreter_name, m)) for name, m in transfer_models]
    universal_figure(out / "universal.png", delta, x_test[:8], panels, classes)
