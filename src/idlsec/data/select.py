"""Deterministic choice of the images to attack and of their random target classes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from .dataset import Dataset, match_channels


@dataclass
class Selection:
    indices: torch.Tensor  # int64 (n,), indices into the dataset
    x: torch.Tensor        # float (n, C, H, W) in [0, 1], C = the model's input channels
    y: torch.Tensor        # int64 (n,), true labels (the model's predictions for unlabeled data)
    targets: torch.Tensor  # int64 (n,), random class != y among the model's classes, same seed
    report: dict = field(default_factory=dict)  # what qualified and why the others did not


def _card_value(model, name):
    card = getattr(model, "card", None)
    return getattr(card, name, None) if card is not None else None


@torch.no_grad()
def select_images(dataset: Dataset, n: int, *, seed: int = 0, model: torch.nn.Module | None = None,
                  correct_only: bool | None = None, classes=None, batch_size: int = 256,
                  device: str | torch.device = "cpu", allow_fewer: bool = False) -> Selection:
    """Pick ``n`` images in a seeded random order and draw one target class != label each.

    correct_only (default: True when a ``model`` is given): keep only images the model classifies
    correctly (the CLI's ``--all-images`` passes False). Images are examined in that order, in
    growing batches (max(64, 2n) first, at most ``batch_size``), until ``n`` qualify; a label outside the model's classes (``>= num_classes``) or an
    image that cannot be decoded is skipped and counted. Unlabeled data (``dataset.labeled`` False)
    needs a model: its prediction becomes the label. With a model whose card gives the input
    channels, images are converted to them (gray replicated, or luma). Targets are drawn among the
    model's classes (its logits' width; ``dataset.num_classes`` without a model).

    Fewer than ``n`` qualifying images is a ConfigError giving the counts and what to change
    (results for ``n`` images must be about ``n`` images); ``allow_fewer=True`` proceeds with what
    qualified and warns instead. ``Selection.report`` holds the counts; ``selection_message(report)``
    is the one line the CLI prints. The indices and targets for a labeled in-memory dataset are
    those of the previous releases (same seed, same draws).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    if correct_only is None:
        correct_only = model is not None
    if correct_only and model is None:
        raise ConfigError("correct_only=True needs a model")
    if not dataset.labeled and model is None:
        raise ConfigError(f"{dataset.name} has no labels (image_labels='none'): a model is needed "
                          "to label its images by their predictions")
    if classes is not None and not dataset.labeled:
        raise ConfigError("classes= filters by label, and this dataset has no labels")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=gen)
    dropped = {k: len(v) for k, v in getattr(dataset, "dropped", {}).items()}
    report = {"candidates": len(dataset) + sum(dropped.values()), "selected": 0, "qualified": 0,
              "examined": 0, "misclassified": 0,
              "unknown_class": dropped.get("unknown_class", 0),
              "unreadable": dropped.get("unreadable", 0),
              "unreadable_files": list(getattr(dataset, "dropped", {}).get("unreadable", [])),
              "correct_only": bool(correct_only), "labels": "dataset" if dataset.labeled
              else "predictions",
              "kept_misclassified": 0 if model is not None and dataset.labeled else None}
    if classes is not None:
        wanted = torch.as_tensor(list(classes), dtype=torch.long)
        keep = torch.isin(dataset.labels[order], wanted)
        report["other_classes"] = int((~keep).sum())
        order = order[keep]
    channels = _card_value(model, "input_size")
    channels = int(channels[0]) if channels else None
    k = dataset.num_classes if model is None else None
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    got_i, got_x, got_y = [], [], []
    count, pos, rounds = 0, 0, 0
    filtering = correct_only and dataset.labeled  # else every readable, in-range image qualifies
    try:
        while count < n and pos < len(order):
            # growing batches: a folder of large images is not decoded far beyond what is needed
            want = n - count
            step = min(batch_size, max(64, 2 * want) << min(rounds, 16)) if filtering else want
            rounds += 1
            idx, x, y, failures = dataset.get_readable(order[pos:pos + step])
            report["examined"] += min(step, len(order) - pos)
            pos += step
            report["unreadable"] += len(failures)
            report["unreadable_files"] += failures
            if not len(idx):
                continue
            if channels is not None:
                x = match_channels(x, channels)
            pred = None
            if model is not None:
                logits = model(x.to(device))
                k = int(logits.shape[1])
                pred = logits.argmax(1).cpu()
            if not dataset.labeled:
                y = pred
            valid = (y >= 0) & (y < k)
            report["unknown_class"] += int((~valid).sum())
            good = valid
            if pred is not None and dataset.labeled:
                wrong = valid & (pred != y)
                if correct_only:
                    report["misclassified"] += int(wrong.sum())
                    good = valid & ~wrong
            report["qualified"] += int(good.sum())
            take = torch.nonzero(good).flatten()[:n - count]
            if pred is not None and dataset.labeled and not correct_only:
                report["kept_misclassified"] += int((pred[take] != y[take]).sum())
            got_i.append(idx[take])
            got_x.append(x[take])
            got_y.append(y[take])
            count += len(take)
    finally:
        if model is not None:
            model.train(was_training)
    report["exhaustive"] = pos >= len(order)
    report["selected"] = count
    if count < n:
        msg = _shortfall(report, n, dataset)
        if not allow_fewer or count == 0:
            raise ConfigError(msg)
        warnings.warn(msg + "; proceeding with fewer (allow_fewer=True)", stacklevel=2)
    chosen = torch.cat(got_i)
    x = torch.cat(got_x)
    y = torch.cat(got_y).long()
    if k < 2:
        raise ConfigError(f"targets need at least 2 classes, the model has {k}")
    offset = torch.randint(1, k, (len(chosen),), generator=gen)
    return Selection(chosen, x, y, (y + offset) % k, report)


def _reasons(r: dict) -> list[str]:
    out = []
    if r.get("misclassified"):
        out.append(f"{r['misclassified']} misclassified")
    if r.get("unknown_class"):
        out.append(f"{r['unknown_class']} with labels outside the model's classes")
    if r.get("unreadable"):
        out.append(f"{r['unreadable']} unreadable")
    if r.get("other_classes"):
        out.append(f"{r['other_classes']} of other classes")
    return out


def _shortfall(r: dict, n: int, dataset: Dataset) -> str:
    reasons = _reasons(r)
    msg = (f"only {r['qualified']} of {r['candidates']} images of {dataset.name} qualify, {n} asked"
           + (f" ({', '.join(reasons)})" if reasons else ""))
    fixes = ["lower n (--n)"]
    if r.get("misclassified"):
        fixes.append("keep misclassified images with correct_only=False (--all-images)")
    if r.get("unknown_class"):
        fixes.append("name the labels after the model's classes (its class names, given by "
                     "--labels, indices or WordNet ids), or take the model's prediction as the "
                     "label (--image-labels none)")
    if r.get("unreadable"):
        fixes.append("fix or remove the unreadable files: " + "; ".join(r["unreadable_files"][:3]))
    return msg + "; " + ", or ".join(fixes)


def selection_message(report: dict) -> str:
    """One line for the CLI, e.g. "8 of 40 images qualified: 30 misclassified, 2 with labels
    outside the model's classes"."""
    r = report
    reasons = _reasons(r)
    if r.get("exhaustive"):
        head = f"{r['qualified']} of {r['candidates']} images qualified"
        if r["selected"] != r["qualified"]:
            head += f", {r['selected']} selected"
    else:
        head = (f"{r['selected']} of {r['candidates']} images selected ({r['examined']} examined "
                "in seeded order)")
    line = head + (": " + ", ".join(reasons) if reasons else "")
    notes = []
    if not r.get("correct_only", True) and r.get("kept_misclassified") is not None:
        notes.append(f"misclassified images not filtered out ({r['kept_misclassified']} of the "
                     f"{r['selected']} selected are misclassified)")
    if r.get("labels") == "predictions":
        notes.append("labels are the model's predictions")
    return line + ("; " + "; ".join(notes) if notes else "")
