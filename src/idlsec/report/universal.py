"""The picture of a universal perturbation: the perturbation itself, and for each model the benign
and adversarial images with the maps the system shows for its predictions."""

from __future__ import annotations

from pathlib import Path

import torch

from .figures import _img, _map, plt, show_cell


@torch.no_grad()
def _predict(model, x):
    logits = model(x)
    return logits.argmax(1), torch.softmax(logits.float(), 1).amax(1)


def universal_figure(path, delta: torch.Tensor, x: torch.Tensor, panels, classes, *, dpi: int = 100) -> Path:
    """``panels``: [(name, model, interpreter)]; the first column shows delta (amplified), then
    per image: benign image, benign map, adversarial image, adversarial map for each model."""
    n = x.shape[0]
    delta = delta.detach().to(x.device, x.dtype)
    x_adv = (x + delta).clamp(0, 1)
    size = tuple(x.shape[-2:])
    name = lambda c: classes[c] if 0 <= c < len(classes) else str(c)
    rows = []
    for label, model, interp in panels:
        was = model.training
        model.eval()
        pb, cb = _predict(model, x)
        pa, ca = _predict(model, x_adv)
        mb, ma = interp(x), interp(x_adv)
        model.train(was)
        rows += [(f"{label}\nbenign", [(_img(x[i]), None, f"{name(int(pb[i]))} {float(cb[i]):.2f}")
                                       for i in range(n)]),
                 ("benign map", [(_img(x[i]), _map(mb[i], size), None) for i in range(n)]),
                 ("adversarial", [(_img(x_adv[i]), None, f"{name(int(pa[i]))} {float(ca[i]):.2f}")
                                  for i in range(n)]),
                 ("adv. map", [(_img(x_adv[i]), _map(ma[i], size), None) for i in range(n)])]
    fig, axes = plt.subplots(len(rows), n + 1, figsize=(1.5 * (n + 1), 1.6 * len(rows)), squeeze=False)
    scale = 0.5 / max(float(delta.abs().max()), 1e-8)
    for r, (label, cells) in enumerate(rows):
        ax = axes[r][0]
        ax.axis("off")
        if r == 0:
            ax.imshow(_img(0.5 + scale * delta), cmap="gray" if delta.shape[0] == 1 else None, vmin=0, vmax=1)
            ax.set_title(f"δ ×{scale:.0f}", fontsize=7)
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
        for i, (img, heat, title) in enumerate(cells):
            ax = axes[r][i + 1]
            show_cell(ax, img, heat)
            if i == 0:
                ax.set_ylabel(label, fontsize=7)
            if title:
                ax.set_title(title, fontsize=6)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
