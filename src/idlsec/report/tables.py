"""Paper-style tables from per-configuration summaries: markdown and CSV.

Main table: ASR, target confidence, mean top-k IoU (adversarial vs benign map, over the k grid;
over all images and over the successful ones, named in the column), map L1/L2, perturbation
L∞/L2, queries and seconds per image; then the headline metrics with 95% bootstrap intervals (per
configuration, or pooled over its seeds when a configuration ran with several: docs/protocol.md),
IoU at each k, query budgets and, with several models, the ADV^2-style pivots (rows interpreter ×
attack, one column per model).
"""

from __future__ import annotations

import csv
import io
import math

from ..bench.suite import eps_text
from ..metrics.stats import format_ci

# (column title, summary key, format)
MAIN = [("ASR", "asr", "{:.2f}"), ("Conf.", "confidence_mean", "{:.2f}"),
        ("IoU (all)", "iou_topk_mean", "{:.2f}"), ("IoU (succ.)", "iou_topk_success_mean", "{:.2f}"),
        ("map L1", "map_l1_mean", "{:.3f}"), ("map L2", "map_l2_mean", "{:.3f}"),
        ("L∞ (/255)", "linf_mean", "{:.2f}"), ("L2", "l2_mean", "{:.3f}"),
        ("queries (mean, succ.)", "queries_mean", "{:.0f}"),
        ("queries (median, succ.)", "queries_median", "{:.0f}"),
        ("s/img", "seconds_per_image", "{:.3f}")]
# the metrics with intervals (metrics.stats.CI_METRICS), in the interval table
INTERVALS = [("ASR", "asr", "{:.2f}"), ("IoU (all)", "iou_topk_mean", "{:.2f}"),
             ("IoU (succ.)", "iou_topk_success_mean", "{:.2f}"), ("map L1", "map_l1_mean", "{:.2f}"),
             ("L2", "l2_mean", "{:.3f}"), ("SSIM", "ssim_image_mean", "{:.3f}"),
             ("queries (mean, succ.)", "queries_mean", "{:.0f}"),
             ("queries (median, succ.)", "queries_median", "{:.0f}")]


def fmt(value, spec="{:.3f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return spec.format(value)
    return str(value)


def config_columns(groups) -> list[tuple[str, callable]]:
    """Identifying columns; defense and seed only when they vary or are set."""
    cols = [("Model", lambda g: g.config["model"]), ("Interpreter", lambda g: g.interpreter),
            ("Attack", lambda g: g.attack)]
    if any(g.defense != "none" for g in groups):
        cols.append(("Defense", lambda g: g.defense))
    cols.append(("ε", lambda g: eps_text(g.config.get("eps"))))
    seeds = {str(g.config.get("seed")) for g in groups}
    if len(seeds) > 1 or any("," in x for x in seeds):  # pooled groups: "0,1,2"
        cols.append(("seed" if len(seeds) > 1 else "seeds", lambda g: str(g.config.get("seed"))))
    cols.append(("n", lambda g: str(g.summary.get("n", 0))))
    return cols


def _value(g, key):
    s = g.summary
    if key == "seconds_per_image":
        return s["seconds"] / s["n"] if s.get("n") else None
    if key == "linf_mean" and s.get(key) is not None:
        return s[key] * 255
    return s.get(key)


def main_rows(groups) -> tuple[list[str], list[list[str]]]:
    cols = config_columns(groups)
    metrics = [m for m in MAIN if any(_value(g, m[1]) is not None for g in groups)]
    head = [c for c, _ in cols] + [m[0] for m in metrics]
    rows = [[fn(g) for _, fn in cols] + [fmt(_value(g, key), spec) for _, key, spec in metrics] for g in groups]
    return head, rows


def interval_rows(groups):
    """Headline metrics as ``value [lo, hi]`` (95% percentile bootstrap over the images)."""
    cols = config_columns(groups)
    metrics = [m for m in INTERVALS if any(g.summary.get(m[1]) is not None for g in groups)]
    head = [c for c, _ in cols] + [m[0] for m in metrics]
    rows = [[fn(g) for _, fn in cols]
            + [format_ci(g.summary.get(key), g.summary.get(f"{key}_ci95_lo"),
                         g.summary.get(f"{key}_ci95_hi"), spec) for _, key, spec in metrics]
            for g in groups]
    return head, rows


def iou_rows(groups):
    with_curve = [g for g in groups if g.summary.get("iou_topk_curve")]
    if not with_curve:
        return None
    ks = list(with_curve[0].summary["iou_topk_curve"])
    cols = config_columns(with_curve)
    head = [c for c, _ in cols] + [f"k={float(k) * 100:g}%" for k in ks] + ["mean"]
    rows = []
    for g in with_curve:
        curve = g.summary["iou_topk_curve"]
        rows.append([fn(g) for _, fn in cols] + [fmt(curve.get(k), "{:.2f}") for k in ks]
                    + [fmt(g.summary.get("iou_topk_mean"), "{:.2f}")])
    return head, rows


def query_rows(groups):
    with_q = [g for g in groups if g.summary.get("asr_at_budget")]
    if not with_q:
        return None
    budgets = sorted({int(b) for g in with_q for b in g.summary["asr_at_budget"]})
    cols = config_columns(with_q)
    head = [c for c, _ in cols] + ["queries (mean)", "queries (median)"] + [f"ASR@{b}" for b in budgets]
    rows = [[fn(g) for _, fn in cols] + [fmt(g.summary.get("queries_mean"), "{:.0f}"),
                                        fmt(g.summary.get("queries_median"), "{:.0f}")]
            + [fmt(g.summary["asr_at_budget"].get(str(b)), "{:.2f}") for b in budgets] for g in with_q]
    return head, rows


def pivot_rows(groups, key: str, spec: str):
    """Rows (interpreter, attack[, defense, ε]), one column per model: the papers' layout."""
    models = list(dict.fromkeys(g.config["model"] for g in groups))
    if len(models) < 2:
        return None
    extra = any(g.defense != "none" for g in groups)
    eps_vary = len({g.config.get("eps") for g in groups}) > 1
    row_keys, cells = [], {}
    for g in groups:
        rk = (g.interpreter, g.attack) + ((g.defense,) if extra else ()) + \
             ((eps_text(g.config.get("eps")),) if eps_vary else ())
        if rk not in row_keys:
            row_keys.append(rk)
        cells[rk, g.config["model"]] = _value(g, key)
    head = ["Interpreter", "Attack"] + (["Defense"] if extra else []) + (["ε"] if eps_vary else []) + models
    rows = [list(rk) + [fmt(cells.get((rk, m)), spec) for m in models] for rk in row_keys]
    return head, rows


def markdown_table(head, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(esc(h) for h in head) + " |",
             "|" + "|".join("---" if i < 1 else "---:" if numeric_column(rows, i) else "---"
                            for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def numeric_column(rows, i) -> bool:
    vals = [r[i] for r in rows if r[i] != "–"]
    try:
        [float(v) for v in vals]
    except ValueError:
        return False
    return bool(vals)


def all_tables(groups, pooled=None) -> list[tuple[str, tuple]]:
    """(title, (head, rows)) of every table that applies, in a fixed order; ``pooled``: the
    groups pooled over seeds (``report.build.pool_seeds``), for the interval table."""
    out = [("Attack effectiveness and stealthiness", main_rows(groups))]
    if pooled:
        out.append(("95% bootstrap intervals, seeds pooled", interval_rows(pooled)))
    else:
        out.append(("95% bootstrap intervals", interval_rows(groups)))
    iou = iou_rows(groups)
    if iou:
        out.append(("Top-k IoU between adversarial and benign maps", iou))
    q = query_rows(groups)
    if q:
        out.append(("Queries and success within query budgets", q))
    for title, key, spec in (("ASR per model", "asr", "{:.2f}"), ("IoU per model", "iou_topk_mean", "{:.2f}"),
                             ("Confidence per model", "confidence_mean", "{:.2f}")):
        p = pivot_rows(groups, key, spec)
        if p:
            out.append((title, p))
    return out


LEGEND = ("ASR: attack success rate (targeted: prediction = target). Conf.: mean softmax probability of the "
          "target (untargeted: of the prediction). IoU: top-k IoU between the adversarial and the benign map, "
          "averaged over the k grid (higher = the adversarial map looks more benign); (all): mean over all "
          "images, (succ.): over the successful ones. map L1/L2: distances "
          "between min-max normalised maps. L∞ in /255 units, L2 in [0,1] units. queries: over successful "
          "images. s/img: attack time per image. [lo, hi]: 95% percentile bootstrap interval over the images "
          "(10,000 resamples, seed 0; seeds pooled: the images of every seed together); docs/protocol.md.")


def csv_text(groups) -> str:
    """One row per configuration: identity, every scalar of the summary, IoU per k, ASR per budget."""
    ident = ["key", "model", "dataset", "interpreter", "attack", "defense", "eps", "seed", "split", "targeted"]
    rows, keys = [], []
    for g in groups:
        row = {"key": g.key, "model": g.config.get("model"), "dataset": g.config.get("dataset"),
               "interpreter": g.interpreter, "attack": g.attack, "defense": g.defense,
               "eps": g.config.get("eps"), "seed": g.config.get("seed"), "split": g.config.get("split"),
               "targeted": g.config.get("targeted")}
        for k, v in g.summary.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[k] = v
        for k, v in (g.summary.get("iou_topk_curve") or {}).items():
            row[f"iou_k{float(k) * 100:g}"] = v
        for b, v in (g.summary.get("asr_at_budget") or {}).items():
            row[f"asr_at_{b}"] = v
        if g.summary.get("n"):
            row["seconds_per_image"] = g.summary["seconds"] / g.summary["n"]
        rows.append(row)
        keys += [k for k in row if k not in keys]
    cols = ident + [k for k in keys if k not in ident]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return buf.getvalue()
