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

from ..data import load_dataset
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
    """Phi(x, M): keep x (+ small noise) where M = 1, replace by blur or coloured noise elsewhere."""
    n = x.shape[0]
    dev = x.device
    kept = x + 0.03 * torch.randn(x.shape, generator=gen).to(dev)
    colour = 0.5 + (torch.rand((n, x.shape[1], 1, 1), generator=gen).to(dev) - 0.5) * 0.66
    noise = colour + 0.11 * torch.randn(x.shape, generator=gen).to(dev)
    use_blur = (torch.rand((n, 1, 1, 1), generator=gen) < 0.5).to(dev)
    alt = torch.where(use_blur, gaussian_blur(x, sigma, ksize), noise)
    return (alt + big_mask * (kept - alt)).clamp(0, 1)


@torch.no_grad()
def rts_quality(net: SaliencyNet, model, dataset, *, n: int = 1000, batch_size: int = 250, device="cpu",
                seed: int = 0) -> dict:
    """Accuracy kept on the preserved region (rest blurred) and mean mask area, on ``n`` seeded images."""
    was = net.training
    net.eval()
    side = min(dataset.images.shape[-2:])
    sigma, ksize = blur_params(side)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    clean = kept = destroyed = 0
    area = 0.0
    for s in range(0, len(order), batch_size):
        x, y = dataset.get(order[s:s + batch_size])
        x, y = x.to(device), y.to(device)
        mask, _ = net(x, y)
        big = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
        xb = gaussian_blur(x, sigma, ksize)
        clean += int((model(x).argmax(1) == y).sum())
        kept += int((model(xb + big * (x - xb)).argmax(1) == y).sum())
        destroyed += int((model(x + big * (xb - x)).argmax(1) == y).sum())
        area += float(big.mean((1, 2, 3)).sum())
    net.train(was)
    total = len(order)
    acc = clean / total
    return {"n": total, "clean_accuracy": acc, "preserved_accuracy": kept / total,
            "accuracy_kept": (kept / total) / acc if acc else 0.0, "destroyed_accuracy": destroyed / total,
            "mean_mask_area": area / total, "blur_sigma": sigma}


def train_rts(model_name: str, dataset_name: str | None = None, *, epochs: float = 1.0, batch_size: int = 64,
              lr: float = 3e-3, seed: int = 0, device: str = "cpu", out: str | Path | None = None,
              train_encoder: bool = False, area: float = 8.0, smooth: float = 0.5, destroyer: float = 1.0,
              preserver: float = 0.3, max_seconds: float | None = None, n_eval: int = 1000,
              model_confidence: float = 0.0, width: int | None = None, progress: bool = True) -> dict:
    """Train a masking model for zoo model ``model_name``; write safetensors + JSON card to ``out``
    (default: the packaged ``rts-<model>.safetensors``). ``max_seconds`` stops training early
    (the steps actually run are recorded)."""
    from tqdm.auto import tqdm

    model = load_model(model_name, device=device)
    card = model.card
    dataset_name = dataset_name or card.dataset
    if dataset_name != card.dataset:
        raise ConfigError(f"model {model_name} is trained on {card.dataset}, not {dataset_name}")
    if epochs <= 0 or batch_size < 1 or lr <= 0:
        raise ConfigError("epochs, batch_size and lr must be positive")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train, test = load_dataset(dataset_name, "train"), load_dataset(dataset_name, "test")
    net = SaliencyNet.for_model(model, train_encoder=train_encoder, model_confidence=model_confidence,
                                width=width).to(device)
    enc = {id(p) for p in net.encoder.parameters()} if train_encoder else set()
    groups = [{"params": [p for p in net.parameters() if p.requires_grad and id(p) not in enc], "base_lr": lr}]
    if enc:  # fine-tune the pretrained encoder ten times slower than the decoder learns
        groups.append({"params": list(net.encoder.parameters()), "base_lr": lr / 10})
    opt = torch.optim.Adam([dict(g, lr=g["base_lr"]) for g in groups])
    total = max(1, int(epochs * len(train) / batch_size))
    side = min(card.input_size[1:])
    sigma, ksize = blur_params(side)
    flip = card.input_size[0] == 3
    start, steps, history = time.perf_counter(), 0, []
    net.train()
    order = torch.empty(0, dtype=torch.long)
    bar = tqdm(range(total), desc="train-rts", disable=not progress, leave=False)
    for step in bar:
        elapsed = time.perf_counter() - start
        if max_seconds is not None and elapsed > max_seconds:
            break
        progress_frac = max(step / total, elapsed / max_seconds if max_seconds else 0.0)
        for group in opt.param_groups:  # cosine decay over the steps or the time budget, whichever ends first
            group["lr"] = group["base_lr"] * 0.5 * (1 + math.cos(math.pi * min(progress_frac, 1.0)))
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(train), generator=gen)])
        idx, order = order[:batch_size], order[batch_size:]
        x, y = train.get(idx)
        if flip:
            x = torch.where((torch.rand(len(x), generator=gen) < 0.5).view(-1, 1, 1, 1), x.flip(3), x)
        x, y = x.to(device), y.to(device)
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
                            "preserver": round(float(lp.detach()), 4), "destroyer": round(float(ld.detach()), 4)})
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", area=f"{float(big.detach().mean()):.3f}")
    seconds = time.perf_counter() - start
    quality = rts_quality(net, model, test, n=n_eval, device=device, seed=seed)
    info = {"model": model_name, "dataset": dataset_name, "seed": seed, "steps": steps, "planned_steps": total,
            "batch_size": batch_size, "lr": lr, "train_encoder": train_encoder,
            "loss_weights": {"area": area, "smooth": smooth, "destroyer": destroyer, "preserver": preserver},
            "seconds": round(seconds, 1), "device": str(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "command": command_line(),
            "quality": quality, "config": net.config, "history": history[-10:]}
    out = Path(out) if out is not None else rts_weights_path(model_name)
    net.save(out, {"model": model_name, "seed": seed})
    info["sha256"] = file_digest(out)
    out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    info["out"] = str(out)
    return info
