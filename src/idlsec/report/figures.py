"""Pictures: benign vs adversarial images and maps, side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F


def _img(t: torch.Tensor):
    t = t.detach().float().cpu().clamp(0, 1)
    return t[0].numpy() if t.shape[0] == 1 else t.permute(1, 2, 0).numpy()


def _map(m: torch.Tensor, size):
    m = F.interpolate(m.detach().float().cpu()[None], size=size, mode="bilinear", align_corners=False)
    return m[0, 0].numpy()


def show_cell(ax, img, heat=None):
    """An image with an optional map overlaid (jet, alpha 0.5), no ticks."""
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def example_grid(path, x, x_adv, benign_map=None, adv_map=None, *, titles_benign=None, titles_adv=None,
                 max_images: int = 8, amplify: float | None = None, dpi: int = 100) -> Path:
    """Rows: benign image, benign map, adversarial image, adversarial map, amplified perturbation."""
    n = min(max_images, x.shape[0])
    size = tuple(x.shape[-2:])
    rows = [("benign", lambda i: (_img(x[i]), None))]
    if benign_map is not None:
        rows.append(("benign map", lambda i: (_img(x[i]), _map(benign_map[i], size))))
    rows.append(("adversarial", lambda i: (_img(x_adv[i]), None)))
    if adv_map is not None:
        rows.append(("adv. map", lambda i: (_img(x_adv[i]), _map(adv_map[i], size))))
    delta = (x_adv - x)[:n].detach().float().cpu()
    scale = amplify or 0.5 / max(float(delta.abs().max()), 1e-8)
    rows.append((f"perturbation ×{scale:.0f}", lambda i: (_img(0.5 + scale * delta[i]), None)))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    for r, (label, fn) in enumerate(rows):
        for i in range(n):
            ax = axes[r][i]
            show_cell(ax, *fn(i))
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
            if r == 0 and titles_benign:
                ax.set_title(titles_benign[i], fontsize=7)
            if label == "adversarial" and titles_adv:
                ax.set_title(titles_adv[i], fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
