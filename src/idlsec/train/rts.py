"""Training of the RTS masking model (Dabkowski & Gal, NeurIPS 2017) with the objective of
pytorch-saliency's ``SaliencyLoss`` as ADV^2 uses it (ALGORITHMS.md §2.4):

    L = area * mean((m + 5e-4)^0.3) + smooth * S(m) + destroyer * CW_nt(f(Phi(x, 1 - M)), y; 5)
        + preserver * CW_t(f(Phi(x, M)), y; 1)

``m`` is the native mask, ``M`` its bilinear upsampling to the input, ``S`` the squared-difference
smoothness with a border penalty of 0.3 (sum, divided by power * N), ``CW_t(z, y; k) =
relu(max_{j != y} z_j - z_y + k)`` (keep y) and ``CW_nt(z, y; k) = relu(z_y - max_{j != y} z_j +
k)`` (lose y). ``Phi(x, M) = M * (x + N(0, 0.03^2)) + (1 - M) * alt`` where ``alt`` is, with
probability 0.5 per sample, a Gaussian blur of x (kernel 55, sigma 11 at 224; sigma 2.0 on small
inputs, where cifar10-resnet20 keeps 20% accuracy) and otherwise noise of std 0.11 around a random
colour (0.5 +- 0.33). Defaults: area 8, smooth 0.5, destroyer 1, preserver 0.3; Adam, lr 3e-3
with cosine decay over the planned steps, or over ``max_seconds`` when that ends first (a
time-limited run is therefore not bit-reproducible). The classifier is frozen (it only scores
the perturbed images); the encoder is shared and frozen unless ``train_encoder=True``, which
fine-tunes a copy (at lr / 10) and adds the cross-entropy of the encoder's own logits to L.
Not done: the paper's fake-label training (a random wrong class should give an empty mask).

Any classifier: a zoo name or any model spec ``load_model`` accepts, or an ``nn.Module``; the
data are a built-in dataset (train split; test split for the quality figures), an image folder
(resized and converted to the model's input; a seeded hold-out for the quality figures) or a
Dataset object. Unlabeled images are trained on the model's prediction.

Quality figures (on ``n_eval`` test images, masks for the true class): the classifier's accuracy
on ``M * x + (1 - M) * blur(x)`` (only the masked region kept, the rest blurred with the training
blur), divided by its clean accuracy; and the mean area of ``M``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import folder_options, load_dataset
from ..data.resolve import file_digest
from ..errors import ConfigError
from ..interpreters._blur import gaussian_blur
from ..interpreters.rts import rts_weights_path
from ..interpreters.rts_net import SaliencyNet
from ..models import load_model
from . import command_line


def blur_params(side: int) -> tuple[float, int | None]:
    """(sigma, kernel size) of the destroying blur for inputs of side ``side``."""
    if side >= 112:
        return 11.0 * side / 224, (55 if side == 224 else None)
    return 2.0, None


def cw_keep(logits, y, conf):
    this = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return F.relu(other - this + conf)


def cw_lose(logits, y, conf):
    this = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return F.relu(this - other + conf)


def smoothness(m, power=2.0, border=0.3):
    dx = (m[..., :, 1:] - m[..., :, :-1]).abs().pow(power).sum()
    dy = (m[..., 1:, :] - m[..., :-1, :]).abs().pow(power).sum()
    edge = (m[..., 0, :].pow(power).sum() + m[..., -1, :].pow(power).sum()
            + m[..., :, 0].pow(power).sum() + m[..., :, -1].pow(power).sum())
    return (dx + dy + border * edge) / (power * m.shape[0])


def perturb(x, big_mask, gen, sigma, ksize):
    """Phi(x, M): keep x (+ small noise) where M = 1, blur or coloured noise elsewhere."""
    n = x.shape[0]
    dev = x.device
    kept = x + 0.03 * torch.randn(x.shape, generator=gen).to(dev)
    colour = 0.5 + (torch.rand((n, x.shape[1], 1, 1), generator=gen).to(dev) - 0.5) * 0.66
    noise = colour + 0.11 * torch.randn(x.shape, generator=gen).to(dev)
    use_blur = (torch.rand((n, 1, 1, 1), generator=gen) < 0.5).to(dev)
    alt = torch.where(use_blur, gaussian_blur(x, sigma, ksize), noise)
    return (alt + big_mask * (kept - alt)).clamp(0, 1)


@torch.no_grad()
def rts_quality(net: SaliencyNet, model, dataset, *, n: int = 1000, batch_size: int = 250,
                device="cpu", seed: int = 0, indices=None) -> dict:
    """Accuracy kept on the preserved region (rest blurred) and mean mask area, on ``n`` seeded
    images of ``dataset`` (or on ``indices``). Unlabeled images (label < 0) take the model's
    prediction as their label."""
    was = net.training
    net.eval()
    side = min(net.config["input_size"][1:])
    sigma, ksize = blur_params(side)
    if indices is None:
        gen = torch.Generator().manual_seed(seed)
        indices = torch.randperm(len(dataset), generator=gen)[:n]
    clean = kept = destroyed = 0
    area = 0.0
    for s in range(0, len(indices), batch_size):
        x, y = dataset.get(indices[s:s + batch_size])
        x, y = x.to(device), y.to(device)
        logits = model(x)
        y = torch.where(y < 0, logits.argmax(1), y)
        mask, _ = net(x, y)
        big = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
        xb = gaussian_blur(x, sigma, ksize)
        clean += int((logits.argmax(1) == y).sum())
        kept += int((model(xb + big * (x - xb)).argmax(1) == y).sum())
        destroyed += int((model(x + big * (xb - x)).argmax(1) == y).sum())
        area += float(big.mean((1, 2, 3)).sum())
    net.train(was)
    total = len(indices)
    acc = clean / total
    return {"n": total, "clean_accuracy": acc, "preserved_accuracy": kept / total,
            "accuracy_kept": (kept / total) / acc if acc else 0.0,
            "destroyed_accuracy": destroyed / total, "mean_mask_area": area / total,
            "blur_sigma": sigma}


BUILTIN = ("cifar10", "fashion-mnist")
IMAGENET_SPECS = ("torchvision:", "timm:")  # pretrained on ImageNet, which idlsec cannot load


def _check_arguments(model, dataset, out, epochs, batch_size, lr, n_eval, max_seconds):
    """Every check that needs no model or data (before any work)."""
    from ..models.zoo import CARDS

    if epochs <= 0 or batch_size < 1 or lr <= 0 or n_eval < 1:
        raise ConfigError("epochs, batch_size, lr and n_eval must be positive")
    if max_seconds is not None and max_seconds <= 0:
        raise ConfigError(f"max_seconds must be positive, got {max_seconds}")
    card = CARDS.get(model) if isinstance(model, str) else getattr(model, "card", None)
    name = model if isinstance(model, str) else getattr(card, "name", "")
    if dataset in (None, "imagenet") and (getattr(card, "dataset", None) == "imagenet"
                                          or name.startswith(IMAGENET_SPECS)):
        raise ConfigError(f"RTS for {name} trains on its training images, ImageNet, which "
                          "idlsec cannot load (no ImageNet loader or download): pass a folder of "
                          "ImageNet-style images, --dataset folder:DIR (dataset='folder:DIR')")
    if isinstance(dataset, str) and dataset != "imagenet" and not dataset.startswith("folder:") \
            and dataset not in BUILTIN:
        from ..errors import unknown_name

        raise unknown_name("dataset", dataset, list(BUILTIN) + ["folder:<path>"])
    return card


def _load_data(spec, card, n_eval: int, seed: int, image_labels=None):
    """(train set, train indices, eval set, eval indices). Built-in datasets use their train and
    test splits; a folder (or a Dataset object) keeps a seeded hold-out of min(n_eval, 20%) of its
    images for the quality figures and trains on the rest."""
    if not isinstance(spec, str):
        data = spec
    elif spec in BUILTIN:
        if card.dataset in BUILTIN and spec != card.dataset:
            raise ConfigError(f"model {card.name} is trained on {card.dataset}, not {spec}")
        train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
        _check_images(train, card)
        gen = torch.Generator().manual_seed(seed)
        return train, torch.arange(len(train)), test, torch.randperm(len(test), generator=gen)[
            :n_eval]
    else:
        options = {"size": tuple(card.input_size[1:])} if card.input_size is not None else {}
        if image_labels is not None:
            options["image_labels"] = image_labels
        data = load_dataset(spec, "train", **folder_options(card, spec, options))
    _check_images(data, card)
    if len(data) < 2:
        raise ConfigError(f"RTS training needs at least 2 images, {spec} has {len(data)}")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_hold = max(1, min(n_eval, len(data) // 5))
    return data, order[n_hold:], data, order[:n_hold]


def _check_images(data, card):
    x, y = data.get([0])
    if isinstance(card, _BareCard):
        card.fill(tuple(x.shape[1:]))
    if tuple(x.shape[1:]) != tuple(card.input_size):
        raise ConfigError(f"{data.name} images are {tuple(x.shape[1:])}, the model takes "
                          f"{tuple(card.input_size)} (C, H, W)")
    labels = getattr(data, "labels", None)
    if labels is not None and len(labels) and int(labels.max()) >= card.num_classes:
        raise ConfigError(f"{data.name} has labels up to {int(labels.max())}, the model has "
                          f"{card.num_classes} classes: map its labels to the model's classes "
                          "(class names) or train on predictions (image_labels='none')")


def train_rts(model, dataset=None, *, weights=None, model_options: dict | None = None,
              image_labels=None, epochs: float = 1.0, batch_size: int = 64, lr: float = 3e-3,
              seed: int = 0, device: str = "cpu", out: str | Path | None = None,
              train_encoder: bool = False, area: float = 8.0, smooth: float = 0.5,
              destroyer: float = 1.0, preserver: float = 0.3, max_seconds: float | None = None,
              n_eval: int = 1000, model_confidence: float = 0.0, width: int | None = None,
              feature_layer: str | None = None, progress: bool = True) -> dict:
    """Train a masking model for ``model`` and write safetensors + a JSON card to ``out``.

    ``model``: a model spec (anything ``load_model`` takes, with ``weights`` and
    ``model_options``) or an ``nn.Module`` (its card, or the dataset's image size, gives the input
    size). ``dataset``: ``cifar10`` | ``fashion-mnist`` (their train split; quality on the test
    split) | ``folder:DIR`` (resized and converted to the model's input; a seeded hold-out of
    ``min(n_eval, 20%)`` images gives the quality figures) | a Dataset object; default: the model's
    dataset. Images without labels are trained on the model's prediction. ``out``: default, for zoo
    models only, the packaged ``rts-<model>.safetensors``. ``max_seconds`` stops training early
    (the steps actually run are recorded). ``feature_layer`` overrides the encoder layer."""
    from tqdm.auto import tqdm

    card = _check_arguments(model, dataset, out, epochs, batch_size, lr, n_eval, max_seconds)
    if isinstance(model, str):
        options = dict(model_options or {})
        if weights is not None:
            options["weights"] = weights
        name = model
        model = load_model(model, device=device, **options)
        card = model.card
    else:
        name = card.name if card is not None else type(model).__name__
    from ..models.zoo import CARDS

    if out is None and (name not in CARDS or weights is not None):
        raise ConfigError("only zoo models (with their own weights) have a packaged RTS location: "
                          "pass out= (--out FILE)")
    if dataset is None:
        if card is None or card.dataset is None:
            raise ConfigError(f"{name} has no dataset of its own: pass dataset= (--dataset)")
        dataset = card.dataset
    if card is None:  # a bare module: the data say the input size, the logits the class count
        card = _BareCard(name, model)
    train, train_idx, test, test_idx = _load_data(dataset, card, n_eval, seed, image_labels)
    input_size = tuple(card.input_size)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = SaliencyNet(model, train_encoder=train_encoder, model_confidence=model_confidence,
                      width=width, input_size=input_size, num_classes=card.num_classes,
                      feature_layer=feature_layer).to(device)
    enc = {id(p) for p in net.encoder.parameters()} if train_encoder else set()
    groups = [{"params": [p for p in net.parameters() if p.requires_grad and id(p) not in enc],
               "base_lr": lr}]
    if enc:  # fine-tune the pretrained encoder ten times slower than the decoder learns
        groups.append({"params": list(net.encoder.parameters()), "base_lr": lr / 10})
    opt = torch.optim.Adam([dict(g, lr=g["base_lr"]) for g in groups])
    total = max(1, int(epochs * len(train_idx) / batch_size))
    sigma, ksize = blur_params(min(input_size[1:]))
    flip = input_size[0] == 3
    start, steps, history = time.perf_counter(), 0, []
    net.train()
    order = torch.empty(0, dtype=torch.long)
    bar = tqdm(range(total), desc="train-rts", disable=not progress, leave=False)
    for step in bar:
        elapsed = time.perf_counter() - start
        if max_seconds is not None and elapsed > max_seconds:
            break
        frac = max(step / total, elapsed / max_seconds if max_seconds else 0.0)
        for group in opt.param_groups:  # cosine decay over the steps or the time, which ends first
            group["lr"] = group["base_lr"] * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        if len(order) < batch_size:
            perm = torch.randperm(len(train_idx), generator=gen)
            order = torch.cat([order, train_idx[perm]])
        idx, order = order[:batch_size], order[batch_size:]
        x, y = train.get(idx)
        if flip:
            x = torch.where((torch.rand(len(x), generator=gen) < 0.5).view(-1, 1, 1, 1),
                            x.flip(3), x)
        x, y = x.to(device), y.to(device)
        if bool((y < 0).any()):  # unlabeled: the model's prediction is the label
            with torch.no_grad():
                y = torch.where(y < 0, model(x).argmax(1), y)
        mask, enc_logits = net(x, y)
        big = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
        lp = cw_keep(model(perturb(x, big, gen, sigma, ksize)), y, 1.0).mean()
        ld = cw_lose(model(perturb(x, 1 - big, gen, sigma, ksize)), y, 5.0).mean()
        la = (mask + 5e-4).pow(0.3).mean()
        ls = smoothness(mask)
        loss = area * la + smooth * ls + destroyer * ld + preserver * lp
        if train_encoder:  # keep the fine-tuned encoder's own head a classifier (ADV^2's sC)
            loss = loss + F.cross_entropy(enc_logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps = step + 1
        if step % 20 == 0:
            history.append({"step": step, "loss": round(float(loss.detach()), 4),
                            "area": round(float(big.detach().mean()), 4),
                            "preserver": round(float(lp.detach()), 4),
                            "destroyer": round(float(ld.detach()), 4)})
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}",
                            area=f"{float(big.detach().mean()):.3f}")
    seconds = time.perf_counter() - start
    quality = rts_quality(net, model, test, indices=test_idx, device=device)
    info = {"model": name, "dataset": dataset if isinstance(dataset, str) else train.name,
            "seed": seed, "n_train": len(train_idx), "n_eval": len(test_idx),
            "steps": steps, "planned_steps": total, "batch_size": batch_size,
            "lr": lr, "train_encoder": train_encoder,
            "loss_weights": {"area": area, "smooth": smooth, "destroyer": destroyer,
                             "preserver": preserver},
            "seconds": round(seconds, 1), "device": str(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "command": command_line(),
            "quality": quality, "config": net.config, "history": history[-10:]}
    out = Path(out) if out is not None else rts_weights_path(name)
    net.save(out, {"model": name, "seed": seed})
    info["sha256"] = file_digest(out)
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    info["out"] = str(out)
    return info


class _BareCard:
    """What training needs to know about a bare ``nn.Module`` (no card): the input size is the
    data's image size, the class count the width of the logits on one such image."""

    def __init__(self, name: str, model):
        self.name, self.model, self.dataset, self.classes = name, model, None, None
        self.input_size = self.num_classes = None

    def fill(self, input_size: tuple):
        from ..interpreters.rts_net import probe

        if self.input_size is None:
            self.input_size = input_size
            self.num_classes = int(probe(self.model, input_size)[2].shape[1])
