"""Universal (per source→target) perturbation jobs: what ``idlsec universal`` and the SingleADV
suites (benchmarks/singleadv*.yaml) run.

Images: the perturbation is fitted on training-split images of the source class drawn from the
training split *minus* the validation indices (:func:`idlsec.data.validation_indices`), so the
tuning split (``split="val"``) and the reporting split (``split="test"``) never share an image with
the fit or with each other. Measured on the held-out source images of ``split`` and on other-class
images of ``split`` (unintended fooling).

Settings: white-box (``surrogate=None``: fitted on the victim with its interpreter, measured with
full access) or black-box transfer (``surrogate=SPEC``: fitted on the surrogate model with
``surrogate_interpreter``; the victim is seen only through a :class:`~idlsec.attacks.oracle.BlackBox`
oracle returning probabilities and, for the map metrics, the map of its prediction from the
victim's ``interpreter`` and each of ``transfer_interpreters``; the oracle's query count is
reported).

Fooling accounting (:func:`fooling_accounting`): ``fooling_rate`` counts only the source images the
clean victim classifies correctly (as the source class); ``already_target_share`` (clean
prediction already the target) and ``misclassified_share`` (any other wrong class) are reported
apart, and ``fooling_rate_all`` is the former figure over all source images. Map fidelity is over
the correctly classified source images.

Fits are deterministic, so a job whose fit (surrogate, pair, budget, images, parameters, seed) was
already done in this process reuses that δ (``fit_reused``): the transfer suite fits once per pair
for all its victims.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..attacks.oracle import BlackBox
from ..attacks.singleadv import SingleADV
from ..data import load_dataset_for, validation_indices
from ..errors import ConfigError
from ..interpreters import get_interpreter
from ..metrics import DEFAULT_K_GRID, map_l1, topk_iou_curve
from ..models import get_card, load_model, model_card
from ..runtime import default_device

_FITS: dict[str, dict] = {}  # fit key -> {"delta", ...}: deterministic fits reused within a process


def fitting_indices(n_train: int) -> torch.Tensor:
    """Indices of the training split a perturbation may be fitted on: all but the validation
    indices (sorted). Disjoint from ``validation_indices(n_train)`` and from the test split."""
    keep = torch.ones(n_train, dtype=torch.bool)
    keep[validation_indices(n_train)] = False
    return keep.nonzero().squeeze(1)


def fooling_accounting(clean_pred: torch.Tensor, adv_pred: torch.Tensor, *, source: int, target: int) -> dict:
    """Fooling figures for images of class ``source``: ``fooling_rate`` over those the clean model
    classifies correctly (NaN when none is), ``fooling_rate_all`` over all of them, and the shares
    ``correct_share`` + ``already_target_share`` (clean prediction = target) +
    ``misclassified_share`` (clean prediction another wrong class) = 1."""
    n = int(clean_pred.numel())
    correct, already = clean_pred == source, clean_pred == target
    hit = adv_pred == target
    share = (lambda m: float(m.float().mean()) if n else math.nan)
    return {"fooling_rate": float(hit[correct].float().mean()) if correct.any() else math.nan,
            "fooling_rate_all": share(hit), "correct_share": share(correct),
            "already_target_share": share(already), "misclassified_share": share(~correct & ~already),
            "n_source": n, "n_correct": int(correct.sum())}


class _WhiteBox:
    """The evaluator's full view of a model: probabilities and the map of the prediction."""

    def __init__(self, model, interpreter=None):
        self.model, self.interpreter = model, interpreter

    @torch.no_grad()
    def probs(self, x, batch=500):
        was = self.model.training
        self.model.eval()
        try:
            return torch.cat([self.model(x[b:b + batch]).softmax(1) for b in range(0, len(x), batch)])
        finally:
            self.model.train(was)

    def maps(self, x, batch=250):
        return torch.cat([self.interpreter(x[b:b + batch]) for b in range(0, len(x), batch)])


class _Oracle:
    """The victim seen only through :class:`BlackBox` oracles (one per interpreter for maps)."""

    def __init__(self, model, interpreter=None):
        self.bb = BlackBox(model, output="probs", interpreter=interpreter, max_queries=None)

    def probs(self, x, batch=500):
        return torch.cat([self.bb(x[b:b + batch]) for b in range(0, len(x), batch)])

    def maps(self, x, batch=250):
        return torch.cat([self.bb(x[b:b + batch], maps=True)[1] for b in range(0, len(x), batch)])


def measure(view, delta, *, source: int, target: int, source_images, other_images=None, map_views=None,
            k_grid=DEFAULT_K_GRID, max_map_images: int | None = None, records: list | None = None) -> dict:
    """Metrics of a perturbation through ``view`` (:class:`_WhiteBox` or :class:`_Oracle`): the
    fooling accounting, ``target_confidence_mean`` (mean p(target) over the correctly classified
    source images), map fidelity over (the first ``max_map_images`` of) those images for ``view``
    and each of ``map_views`` ({name: view}), and the unintended fooling on ``other_images``."""
    delta = delta.to(source_images.device, source_images.dtype)
    x_adv = (source_images + delta).clamp(0, 1)
    clean, adv = view.probs(source_images), view.probs(x_adv)
    out = fooling_accounting(clean.argmax(1), adv.argmax(1), source=source, target=target)
    correct = (clean.argmax(1) == source).nonzero().squeeze(1)
    out["target_confidence_mean"] = float(adv[correct, target].mean()) if len(correct) else math.nan
    sel = correct if max_map_images is None else correct[:max_map_images]
    fooled = adv[sel].argmax(1) == target
    iou_of = {}
    for name, v in {"": view, **(map_views or {})}.items():
        if len(sel):
            benign, advm = v.maps(source_images[sel]), v.maps(x_adv[sel])
            iou, l1 = topk_iou_curve(advm, benign, k_grid).mean(1), map_l1(advm, benign)
        else:  # no correctly classified source image: no map to compare
            iou = l1 = torch.zeros(0)
        res = {"iou_topk_mean": float(iou.mean()) if len(sel) else math.nan,
               "map_l1_mean": float(l1.mean()) if len(sel) else math.nan,
               "iou_topk_fooled_mean": float(iou[fooled].mean()) if fooled.any() else math.nan,
               "map_l1_fooled_mean": float(l1[fooled].mean()) if fooled.any() else math.nan,
               "n_maps": len(sel)}
        iou_of[name] = iou
        if name:
            out.setdefault("interpreters", {})[name] = res
        else:
            out.update(res)
    if other_images is not None and len(other_images):
        before = view.probs(other_images).argmax(1)
        after = view.probs((other_images + delta).clamp(0, 1)).argmax(1)
        out["unintended_fooling_rate"] = float((after != before).float().mean())
        out["unintended_to_target_rate"] = float(((after == target) & (before != target)).float().mean())
        out["n_other"] = int(other_images.shape[0])
    if isinstance(view, _Oracle):
        out["victim_queries"] = view.bb.queries + sum(v.bb.queries for v in (map_views or {}).values())
    if records is not None:
        pos = {int(i): j for j, i in enumerate(sel)}
        for i, (c, a) in enumerate(zip(clean.argmax(1).tolist(), adv.argmax(1).tolist(), strict=True)):
            rec = {"i": i, "clean": c, "adv": a}
            if i in pos:
                rec.update({f"iou{'_' + k if k else ''}": round(float(v[pos[i]]), 4) for k, v in iou_of.items()})
            records.append(rec)
    return out


def evaluate_delta(model, interpreter, delta: torch.Tensor, *, source: int, target: int,
                   source_images: torch.Tensor, other_images: torch.Tensor | None = None,
                   k_grid=DEFAULT_K_GRID, max_map_images: int | None = None) -> dict:
    """White-box metrics of a perturbation on ``model`` explained by ``interpreter`` (see :func:`measure`)."""
    return measure(_WhiteBox(model, interpreter), delta, source=source, target=target,
                   source_images=source_images, other_images=other_images, k_grid=k_grid,
                   max_map_images=max_map_images)


def evaluate_oracle(model, interpreter, delta: torch.Tensor, *, source: int, target: int,
                    source_images: torch.Tensor, other_images: torch.Tensor | None = None,
                    transfer_interpreters=(), k_grid=DEFAULT_K_GRID, max_map_images: int | None = None,
                    records: list | None = None) -> dict:
    """Black-box metrics of a perturbation on a victim seen only through ``BlackBox`` oracles
    (probabilities; maps of its prediction from ``interpreter`` and each name in
    ``transfer_interpreters``, under ``interpreters``); ``victim_queries`` counts every query."""
    views = {name: _Oracle(model, get_interpreter(name, model)) for name in transfer_interpreters}
    return measure(_Oracle(model, interpreter), delta, source=source, target=target,
                   source_images=source_images, other_images=other_images, map_views=views,
                   k_grid=k_grid, max_map_images=max_map_images, records=records)


def class_images(dataset, cls: int, n: int | None, seed: int, start: int = 0, *, indices: bool = False):
    """Up to ``n`` images of class ``cls`` in a seeded order (all of them when n is None), from
    position ``start`` of that order on (with ``indices``: also their positions in ``dataset``)."""
    idx = (dataset.labels == cls).nonzero().squeeze(1)
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))][start:]
    idx = idx if n is None else idx[:n]
    return (dataset.get(idx)[0], idx) if indices else dataset.get(idx)[0]


def other_images(dataset, cls: int, n: int | None, seed: int, start: int = 0):
    """Up to ``n`` images of every class but ``cls``, in a seeded order (from position ``start``
    on), with their labels."""
    idx = (dataset.labels != cls).nonzero().squeeze(1)
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed + 1))][start:]
    return dataset.get(idx if n is None else idx[:n])


@dataclass
class UniversalJob:
    model: str                   # the victim (white-box: also the model the fit uses)
    dataset: str
    interpreter: str             # the victim's interpreter
    source: int | str
    target: int | str
    norm: str = "linf"
    eps: float | None = None
    n_train: int = 1000          # training-split (minus validation) source images to fit on
    n_inhibition: int = 2000     # training-split other-class images (0: no inhibition term)
    n_test: int | None = None    # held-out source images of ``split`` (None: all)
    n_test_other: int | None = 2000  # held-out other-class images for unintended fooling
    params: dict = field(default_factory=dict)
    split: str = "test"          # where it is measured: "test" (reporting) or "val" (tuning)
    surrogate: str | None = None  # black-box: fit on this model; the victim is seen through an oracle
    surrogate_interpreter: str | None = None  # the fit's interpreter (default: ``interpreter``)
    transfer_to: list = field(default_factory=list)  # further victims (through the oracle, ``interpreter``)
    transfer_interpreters: list = field(default_factory=list)  # the victim's maps from other interpreters
    max_map_images: int | None = None  # map metrics on the first N correctly classified sources
    seed: int = 0
    device: str = field(default_factory=default_device)
    weights: str | None = None
    k_grid: tuple = DEFAULT_K_GRID
    model_options: dict = field(default_factory=dict)   # load_model options the user set (victim)
    data_options: dict = field(default_factory=dict)    # load_dataset options the user set

    def config(self) -> dict:
        d = asdict(self)
        d["k_grid"] = list(self.k_grid)
        for key in ("model_options", "data_options", "transfer_interpreters", "surrogate",
                    "surrogate_interpreter", "max_map_images"):  # when used
            if not d[key]:
                del d[key]
        return d


def _check(job: UniversalJob) -> None:
    if job.split not in ("test", "val"):
        raise ConfigError(f"split must be 'test' (reporting) or 'val' (tuning), got {job.split!r}")
    if job.split == "val" and job.dataset.startswith("folder:"):
        raise ConfigError("split 'val' is for the built-in datasets; an image folder is measured on "
                          "the source images the fit did not use")
    if job.max_map_images is not None and (isinstance(job.max_map_images, bool)
                                           or not isinstance(job.max_map_images, int) or job.max_map_images < 1):
        raise ConfigError(f"max_map_images must be a positive integer or None, got {job.max_map_images!r}")
    from ..interpreters import INTERPRETERS

    for name in [job.interpreter, job.surrogate_interpreter, *job.transfer_interpreters]:
        if name is not None and name not in INTERPRETERS:
            raise ConfigError(f"unknown interpreter {name!r}; known: {sorted(INTERPRETERS)}")
    for name in [*job.transfer_to, *([job.surrogate] if job.surrogate else [])]:
        ds = get_card(name).dataset
        if not job.dataset.startswith("folder:") and ds != job.dataset:
            raise ConfigError(f"model {name} is trained on {ds}, not {job.dataset}")


def _fit(job: UniversalJob, fit_model, fit_interp, x_train, xo_train, source, target, progress) -> dict:
    key = json.dumps({k: v for k, v in job.config().items() if k not in (
        "n_test", "n_test_other", "split", "transfer_to", "transfer_interpreters", "max_map_images",
        "k_grid", "interpreter") + (("model", "weights", "model_options") if job.surrogate else ())}
        | {"fit_interpreter": job.surrogate_interpreter or job.interpreter}, sort_keys=True, default=str)
    if key in _FITS:
        return {**_FITS[key], "fit_reused": True}
    atk = SingleADV(fit_model, fit_interp, source=source, target=target, norm=job.norm, eps=job.eps,
                    seed=job.seed, progress=progress, **job.params)
    start = time.perf_counter()
    delta = atk.fit(x_train, others=xo_train)
    fit = {"delta": delta.detach().cpu(), "fooling_rate_train": atk.fooling_rate, "converged": atk.converged,
           "iterations": atk.history[-1]["iteration"] if atk.history else 0, "history": atk.history,
           "seconds": time.perf_counter() - start, "params": atk.get_params(),
           "eps": atk.budget(tuple(delta.shape))}
    _FITS[key] = fit
    return {**fit, "fit_reused": False}


def run_universal_job(job: UniversalJob, out_dir=None, *, progress: bool = False) -> dict:
    """Fit (or reuse), evaluate and transfer one universal perturbation; with ``out_dir`` write
    delta.safetensors, summary.json, records.jsonl.gz (per held-out source image: its index in
    ``split``, clean and adversarial victim predictions, map IoU) and universal.png. Returns the summary."""
    _check(job)
    card = model_card(job.model, **job.model_options)
    if not job.dataset.startswith("folder:") and job.dataset != card.dataset:
        raise ConfigError(f"model {job.model} is trained on {card.dataset}, not {job.dataset}")
    dev = job.device
    model = load_model(job.model, weights=job.weights, device=dev, **job.model_options)
    fit_model = load_model(job.surrogate, device=dev) if job.surrogate else model
    train, held = (load_dataset_for(model, job.dataset, split, **job.data_options)
                   for split in ("train", job.split))
    if not train.labeled:
        raise ConfigError(f"{job.dataset}: a universal perturbation is fitted on the images of its "
                          "source class, and these images have no labels (--image-labels)")
    folder = job.dataset.startswith("folder:")
    if not folder:  # never fit on a validation image
        keep = fitting_indices(len(train))
        train = replace(train, images=train.images[keep], labels=train.labels[keep])
    source, target = train.class_index(job.source), train.class_index(job.target)
    interp = get_interpreter(job.interpreter, model)
    fit_interp = get_interpreter(job.surrogate_interpreter or job.interpreter, fit_model)
    x_train = class_images(train, source, job.n_train, job.seed).to(dev)
    xo_train = other_images(train, source, job.n_inhibition, job.seed)[0].to(dev) if job.n_inhibition else None
    # an image folder has one split: the held-out images are the source images the fit did not use
    skip, skip_o = (0, 0) if not folder else (len(x_train), len(xo_train) if xo_train is not None else 0)
    x_test, test_idx = class_images(held, source, job.n_test, job.seed, skip, indices=True)
    x_test = x_test.to(dev)
    xo_test = other_images(held, source, job.n_test_other, job.seed, skip_o)[0].to(dev)
    if not len(x_train) or not len(x_test):
        raise ConfigError(f"{job.dataset}: {len(x_train)} source images ({train.classes[source]}) "
                          f"to fit on and {len(x_test)} held-out ones to measure on; both must be "
                          "> 0" + (" (a folder's source images are split: lower n_train/--n-train)"
                                   if skip else ""))
    log = (f"{len(x_train)} {train.classes[source]} image(s) to fit, {len(x_test)} "
           f"held out ({job.split}), {len(xo_test)} of other classes" + (
               " (one folder: fit and held-out images are disjoint)" if skip else ""))
    fit = _fit(job, fit_model, fit_interp, x_train, xo_train, source, target, progress)
    delta = fit.pop("delta").to(dev)
    others = xo_test if len(xo_test) else None
    common = {"source": source, "target": target, "source_images": x_test, "k_grid": job.k_grid,
              "max_map_images": job.max_map_images}
    records: list = []
    if job.surrogate:
        res = evaluate_oracle(model, interp, delta, other_images=others, records=records,
                              transfer_interpreters=job.transfer_interpreters, **common)
    else:
        views = {n: _WhiteBox(model, get_interpreter(n, model)) for n in job.transfer_interpreters}
        res = measure(_WhiteBox(model, interp), delta, other_images=others, map_views=views,
                      records=records, **common)
    by_interp = res.pop("interpreters", {})
    summary = {
        "setting": "black-box" if job.surrogate else "white-box",
        "fooling_rate_train": fit.pop("fooling_rate_train"),
        "fooling_rate_test": res.pop("fooling_rate"),
        **res, **fit,
        "delta_linf": float(delta.abs().max()), "delta_l2": float(delta.norm()),
        "source": train.classes[source], "target": train.classes[target],
        "config": job.config(), "images": log,
    }
    if job.surrogate:  # the fitted model's own (white-box) figures on the same held-out images
        summary["surrogate"] = evaluate_delta(fit_model, fit_interp, delta, other_images=others, **common)
    victims = {name: load_model(name, device=dev) for name in job.transfer_to}
    transfers = {name: evaluate_oracle(m, get_interpreter(job.interpreter, m), delta, other_images=others, **common)
                 for name, m in victims.items()}
    if transfers:
        summary["transfer"] = transfers
    if by_interp:  # the victim's predictions explained by other interpreters: only map fidelity changes
        summary["transfer_interpreters"] = by_interp
    if out_dir is not None:
        panels = ([(job.surrogate, fit_model, fit_interp)] if job.surrogate else []) + \
            [(job.model, model, interp)]
        panels += [(name, m, get_interpreter(job.interpreter, m)) for name, m in victims.items()]
        for r, i in zip(records, test_idx.tolist(), strict=True):
            r["idx"] = i
        write_universal_outputs(Path(out_dir), summary, delta, x_test, train.classes, panels, records, job.split)
    return summary


def write_universal_outputs(out: Path, summary: dict, delta, x_test, classes, panels, records=(), split="test"):
    from safetensors.torch import save_file

    from ..report.universal import universal_figure

    out.mkdir(parents=True, exist_ok=True)
    save_file({"delta": delta.detach().cpu().contiguous()}, str(out / "delta.safetensors"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if records:
        with gzip.open(out / "records.jsonl.gz", "wt") as f:
            f.writelines(json.dumps({"split": split, **r}) + "\n" for r in records)
    universal_figure(out / "universal.png", delta, x_test[:8], panels, classes)
