"""Pictures of interpretation maps: one column per image, rows image / map overlay / map."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from .figures import _img, _map


def map_grid(path, x: torch.Tensor, maps: torch.Tensor, *, titles=None, max_images: int = 16,
             dpi: int = 100) -> Path:
    """Save a grid: the images, the maps (bilinear to image size) over them, and the raw maps."""
    n = min(max_images, x.shape[0])
    size = tuple(x.shape[-2:])
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.1), squeeze=False)
    for i in range(n):
        img = _img(x[i])
        cmap = "gray" if img.ndim == 2 else None
        axes[0][i].imshow(img, cmap=cmap, vmin=0, vmax=1)
        axes[1][i].imshow(img, cmap=cmap, vmin=0, vmax=1)
        axes[1][i].imshow(_map(maps[i], size), cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axes[2][i].imshow(maps[i, 0].detach().float().cpu().numpy(), cmap="jet", vmin=0, vmax=1)
        for r in range(3):
            axes[r][i].set_xticks([])
            axes[r][i].set_yticks([])
        if titles:
            axes[0][i].set_title(titles[i], fontsize=7)
    for r, label in enumerate(["image", "map overlay", "map (native)"]):
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
