"""Report plots: IoU vs k per attack (with its 95% bootstrap band over the images), ASR vs query
budget, histograms of map distances."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ..bench.suite import eps_text
from ..metrics.stats import bootstrap_ci


def _panels(groups, by):
    panels: dict = {}
    for g in groups:
        panels.setdefault(by(g), []).append(g)
    return panels


def _panel_key(g):
    key = f"{g.config['model']} / {g.interpreter}"
    if g.defense != "none":
        key += f" / {g.defense}"
    return key


def _grid(n):
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def _label(g, panel):
    others = [x for x in panel if x.attack == g.attack]
    extra = f" ε={eps_text(g.config.get('eps'))}" if len(others) > 1 else ""
    seeds = {str(x.config.get("seed")) for x in others}
    pooled = any("," in x for x in seeds)
    return g.attack + extra + (f" s{g.config.get('seed')}" if len(seeds) > 1 or pooled else "")


def iou_vs_k(groups, path) -> Path | None:
    groups = [g for g in groups if g.summary.get("iou_topk_curve")]
    if not groups:
        return None
    panels = _panels(groups, _panel_key)
    fig, axes = _grid(len(panels))
    for ax, (title, gs) in zip(axes, panels.items()):
        for g in gs:
            curve = g.summary["iou_topk_curve"]
            ks = [float(k) * 100 for k in curve]
            (line,) = ax.plot(ks, list(curve.values()), marker="o", ms=3, label=_label(g, gs))
            band = [bootstrap_ci([r["iou_topk"][j] for r in g.records if r.get("iou_topk")],
                                 n_resamples=2000) for j in range(len(ks))]
            if all(lo is not None for lo, _ in band):  # the 95% interval of the mean at each k
                ax.fill_between(ks, [lo for lo, _ in band], [hi for _, hi in band],
                                color=line.get_color(), alpha=0.15, lw=0)
        ax.set(title=title, xlabel="k (% of map pixels)", ylabel="top-k IoU (adv vs benign)", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def asr_vs_queries(groups, path) -> Path | None:
    groups = [g for g in groups if any(r.get("queries") is not None for r in g.records)]
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    top = max([1.0] + [float(r["queries"]) for g in groups for r in g.records if r.get("queries") is not None])
    for g in groups:
        n = len(g.records)
        q = sorted(float(r["queries"]) for r in g.records if r.get("success") and r.get("queries") is not None)
        xs, ys = [1.0], [0.0]
        for i, v in enumerate(q, start=1):
            xs += [max(v, 1.0), max(v, 1.0)]
            ys += [ys[-1], i / n]
        ax.plot([*xs, top * 1.2], [*ys, ys[-1]], label=f"{_panel_key(g)} / {g.attack}")
    ax.set(xscale="log", xlabel="query budget", ylabel="ASR within budget", ylim=(0, 1.02), xlim=(1, top * 1.2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def map_distance_hist(groups, path) -> Path | None:
    groups = [g for g in groups if any(r.get("map_l1") is not None for r in g.records)]
    if not groups:
        return None
    panels = _panels(groups, _panel_key)
    fig, axes = plt.subplots(len(panels), 2, figsize=(9, 2.8 * len(panels)), squeeze=False)
    for row, (title, gs) in zip(axes, panels.items()):
        for ax, metric in zip(row, ("map_l1", "map_l2")):
            for g in gs:
                vals = [r[metric] for r in g.records if r.get(metric) is not None]
                ax.hist(vals, bins=min(20, max(5, len(vals) // 2)), histtype="step", lw=1.5, label=_label(g, gs))
            ax.set(title=f"{title}: {metric.replace('_', ' ')}", xlabel=f"{metric.replace('_', ' ')} (adv vs benign)",
                   ylabel="images")
            ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig, path) -> Path:
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
