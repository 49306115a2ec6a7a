"""Standard supervised training of a zoo architecture, written as safetensors plus a JSON card
with the command, seed, accuracy and SHA-256 (so that packaged weights can be verified)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import load_dataset
from ..data.resolve import file_digest
from ..models import get_card
from ..models.checkpoints import save_weights
from ..models.normalize import NormalizedModel
from . import command_line
from .evaluate import model_accuracy


def augment(x: torch.Tensor, gen: torch.Generator, *, flip: bool, pad: int) -> torch.Tensor:
    """Random crop with zero padding, and horizontal flips (batched, seeded)."""
    n, _, h, w = x.shape
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mask.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
        x = padded[:, :, dy:dy + h, dx:dx + w]
    return x


def train_classifier(model_name: str, *, epochs: int = 5, lr: float = 0.05, batch_size: int = 128,
                     seed: int = 0, out: str | Path | None = None, device: str = "cpu", flip: bool | None = None,
                     pad: int = 2, progress: bool = True) -> dict:
    """SGD (momentum 0.9, nesterov, weight decay 5e-4) with a one-cycle schedule."""
    from tqdm.auto import tqdm

    card = get_card(model_name)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train, test = load_dataset(card.dataset, "train"), load_dataset(card.dataset, "test")
    model = NormalizedModel(card.build(), card.mean, card.std, card=card).to(device)
    flip = card.input_size[0] == 3 if flip is None else flip
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = (len(train) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    # on a GPU the whole uint8 training set lives on the device (150 MB for CIFAR-10): no host
    # round-trip per batch, bf16 autocast and channels_last for speed
    cuda = torch.device(device).type == "cuda"
    images, labels = (train.images.to(device), train.labels.to(device)) if cuda else (None, None)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for s in bar:
            idx = order[s * batch_size:(s + 1) * batch_size]
            if cuda:
                x, y = images[idx.to(device)].float().div_(255), labels[idx.to(device)]
            else:
                x, y = train.get(idx)
            x = augment(x, gen, flip=flip, pad=pad).to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(x), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if s % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    acc = model_accuracy(model, test, device=device)
    info = {"model": model_name, "test_accuracy": acc, "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "seed": seed, "seconds": round(time.perf_counter() - start, 1), "device": device,
            "command": command_line(),
            "torch": torch.__version__}
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_weights(model.net, out, metadata={"model": model_name, "test_accuracy": f"{acc:.4f}", "seed": seed})
        info["sha256"] = file_digest(out)
        out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info
