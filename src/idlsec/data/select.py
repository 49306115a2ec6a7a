"""Deterministic choice of the images to attack and of their random target classes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .dataset import Dataset


@dataclass
class Selection:
    indices: torch.Tensor  # int64 (n,), indices into the dataset
    x: torch.Tensor        # float (n, C, H, W) in [0, 1]
    y: torch.Tensor        # int64 (n,), true labels
    targets: torch.Tensor  # int64 (n,), random class != y, drawn with the same seed


@torch.no_grad()
def select_images(dataset: Dataset, n: int, *, seed: int = 0, model: torch.nn.Module | None = None,
                  correct_only: bool = False, classes=None, batch_size: int = 256,
                  device: str | torch.device = "cpu") -> Selection:
    """Pick ``n`` images in a seeded random order (optionally only those ``model`` classifies
    correctly, optionally only from ``classes``) and draw one target class != true class each."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    if correct_only and model is None:
        raise ConfigError("correct_only=True needs a model")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=gen)
    if classes is not None:
        wanted = torch.as_tensor(list(classes), dtype=torch.long)
        order = order[torch.isin(dataset.labels[order], wanted)]
    if not correct_only:
        chosen = order[:n]
    else:
        was_training = model.training
        model.eval()
        kept, count = [], 0
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x, y = dataset.get(idx)
            pred = model(x.to(device)).argmax(1).cpu()
            good = idx[pred == y]
            kept.append(good)
            count += len(good)
            if count >= n:
                break
        model.train(was_training)
        chosen = torch.cat(kept)[:n]
    if len(chosen) < n:
        raise ConfigError(f"only {len(chosen)} images of {dataset.name}/{dataset.split} qualify, {n} asked")
    x, y = dataset.get(chosen)
    k = dataset.num_classes
    offset = torch.randint(1, k, (len(chosen),), generator=gen)
    return Selection(chosen, x, y, (y + offset) % k)
