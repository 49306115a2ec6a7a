"""Clean accuracy of a model on a dataset split."""

from __future__ import annotations

import torch

from ..data import load_dataset_for
from ..errors import ConfigError
from ..models import get_card, load_model


@torch.no_grad()
def model_accuracy(model, dataset, *, n=None, batch_size=500, device="cpu") -> float:
    """Accuracy on the whole split, or on ``n`` seeded random images of it (``Dataset.sample``)."""
    indices = dataset.sample(len(dataset) if n is None else n)
    correct = 0
    was_training = model.training
    model.eval()
    for start in range(0, len(indices), batch_size):
        x, y = dataset.get(indices[start:start + batch_size])
        correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    model.train(was_training)
    return correct / len(indices)


def accuracy(model_name, dataset_name, *, split="test", n=None, weights=None, batch_size=500, device="cpu",
             model_options=None, data_options=None):
    """Clean accuracy; ``model_options``/``data_options``: load_model / load_dataset keywords."""
    card = get_card(model_name) if not model_options else None
    if card is not None and not dataset_name.startswith("folder:") and dataset_name != card.dataset:
        raise ConfigError(f"model {model_name} is trained on {card.dataset}, not {dataset_name}")
    if n is not None and n < 1:
        raise ConfigError(f"n must be >= 1, got {n}")
    model = load_model(model_name, weights=weights, device=device, **(model_options or {}))
    dataset = load_dataset_for(model, dataset_name, split, **(data_options or {}))
    acc = model_accuracy(model, dataset, n=n, batch_size=batch_size, device=device)
    return {"model": model_name, "dataset": dataset_name, "split": split,
            "n": len(dataset) if n is None else min(n, len(dataset)), "accuracy": acc}
