"""QuScore vs baselines from `idlsec bench` run folders: ASR, mean and median queries (over the
successful images) with percentile-bootstrap 95% intervals, query ratios with paired-bootstrap
intervals, map IoU, and ASR-vs-queries curves (issue #17 item 3, issue #16 item 5).

    python benchmarks/quscore_stats.py benchmarks/results/runs/quscore-baselines \
        [--ref quscore] [--md benchmarks/results/quscore-baselines.md] [--plot curves.png] \
        [--vs benchmarks/results/runs/quscore-stealth:stealth-tuned]

Images are resampled with replacement (2,000 resamples, seed 0), the seeds pooled; a ratio
baseline/ref resamples the same (seed, image) pairs for both attacks (the selection is the same
for every attack of a model and seed). Figures named "over successes" ignore failed images.
``--vs RUN:LABEL`` (repeatable) adds the paired map-IoU change against attack LABEL of another run on the same
images (same model, interpreter, seed and position; images that both fooled), with the interval of
:func:`idlsec.metrics.stats.bootstrap_ci` over the per-image differences, and both L2 norms.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

B, SEED = 2000, 0


def load(run: Path) -> list[dict]:
    f = run / "results.jsonl.gz"
    opener = gzip.open if f.exists() else open
    f = f if f.exists() else run / "results.jsonl"
    with opener(f, "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def groups(recs):
    out = defaultdict(dict)
    for r in recs:
        out[(r["model"], r["interpreter"], r["attack"])][(r["seed"], r["pos"])] = r
    return out


def _stat(q: np.ndarray, ok: np.ndarray, kind: str) -> float:
    if kind == "asr":
        return float(ok.mean()) if len(ok) else float("nan")
    s = q[ok]
    if not len(s):
        return float("nan")
    return float(s.mean() if kind == "mean" else np.median(s))


def bootstrap(q, ok, kind, rng, other=None):
    """(point, lo, hi); with ``other`` = (q2, ok2) the ratio stat(other) / stat(this), paired."""
    idx = rng.integers(0, len(q), size=(B, len(q)))

    def f(i):
        a = _stat(q[i], ok[i], kind)
        return a if other is None else _stat(other[0][i], other[1][i], kind) / a

    point = f(np.arange(len(q)))
    vals = np.array([f(i) for i in idx])
    vals = vals[np.isfinite(vals)]
    lo, hi = (np.percentile(vals, [2.5, 97.5]) if len(vals) else (float("nan"),) * 2)
    return point, float(lo), float(hi)


def arrays(g, keys):
    q = np.array([g[k]["queries"] for k in keys], dtype=float)
    ok = np.array([bool(g[k]["success"]) for k in keys])
    return q, ok


def summarize(run: Path, ref: str | None = None) -> list[dict]:
    rng = np.random.default_rng(SEED)
    gs = groups(load(run))
    rows = []
    for (model, interp, attack), g in sorted(gs.items()):
        keys = sorted(g)
        q, ok = arrays(g, keys)
        iou = np.array([g[k].get("iou_topk_mean", np.nan) for k in keys], dtype=float)
        row = {"model": model, "interpreter": interp, "attack": attack, "n": len(keys),
               "seeds": len({k[0] for k in keys}),
               "asr": bootstrap(q, ok, "asr", rng),
               "q_mean": bootstrap(q, ok, "mean", rng), "q_median": bootstrap(q, ok, "median", rng),
               "iou": float(np.nanmean(iou[ok])) if ok.any() else float("nan"),
               "iou_ci": _iou_ci(iou[ok], rng)}
        rg = gs.get((model, interp, ref)) if ref else None
        if rg is not None and attack != ref:
            common = sorted(set(keys) & set(rg))
            qa, oka = arrays(g, common)
            qr, okr = arrays(rg, common)
            row["ratio_mean"] = bootstrap(qr, okr, "mean", rng, other=(qa, oka))
            row["ratio_median"] = bootstrap(qr, okr, "median", rng, other=(qa, oka))
        rows.append(row)
    return rows


def paired_iou(run: Path, ref_run: Path, ref_label: str) -> list[dict]:
    """Per (model, interpreter, attack) of ``run``: the mean per-image IoU change against attack
    ``ref_label`` of ``ref_run`` on the same (seed, position) images that both fooled, with a
    bootstrap 95% interval (idlsec.metrics.stats), and the mean L2 of both over those images."""
    from idlsec.metrics.stats import bootstrap_ci

    ref = groups(load(ref_run))
    rows = []
    for (model, interp, attack), g in sorted(groups(load(run)).items()):
        rg = ref.get((model, interp, ref_label))
        if rg is None:
            continue
        both = [k for k in sorted(set(g) & set(rg)) if g[k]["success"] and rg[k]["success"]]
        d = [g[k]["iou_topk_mean"] - rg[k]["iou_topk_mean"] for k in both]
        lo, hi = bootstrap_ci(d)
        rows.append({"model": model, "interpreter": interp, "attack": attack, "n": len(both),
                     "delta": float(np.mean(d)) if d else float("nan"), "lo": lo, "hi": hi,
                     "iou_ref": float(np.mean([rg[k]["iou_topk_mean"] for k in both])) if both else float("nan"),
                     "l2": float(np.mean([g[k]["l2"] for k in both])) if both else float("nan"),
                     "l2_ref": float(np.mean([rg[k]["l2"] for k in both])) if both else float("nan")})
    return rows


def paired_markdown(rows, ref_label: str) -> str:
    head = (f"| victim | interpreter | attack | n (both fooled) | IoU of {ref_label} | IoU change [95% CI] | "
            f"L2 of {ref_label} | L2 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ci = "–" if r["lo"] is None else f"[{r['lo']:+.2f}, {r['hi']:+.2f}]"
        lines.append(f"| {r['model']} | {r['interpreter']} | {r['attack']} | {r['n']} | {r['iou_ref']:.2f} | "
                     f"{r['delta']:+.2f} {ci} | {r['l2_ref']:.2f} | {r['l2']:.2f} |")
    return "\n".join(lines)


def _iou_ci(v, rng):
    if not len(v):
        return (float("nan"), float("nan"))
    m = np.array([v[rng.integers(0, len(v), len(v))].mean() for _ in range(B)])
    return tuple(float(x) for x in np.percentile(m, [2.5, 97.5]))


def _ci(t, nd=0):
    p, lo, hi = t
    return "–" if not np.isfinite(p) else f"{p:.{nd}f} [{lo:.{nd}f}, {hi:.{nd}f}]"


def markdown(rows, ref=None) -> str:
    head = ("| victim | interpreter | attack | n (seeds) | ASR [95% CI] | mean q over successes | "
            "median q over successes | IoU over successes |")
    if ref:
        head += f" mean q / {ref} | median q / {ref} |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (f"| {r['model']} | {r['interpreter']} | {r['attack']} | {r['n']} ({r['seeds']}) | "
                f"{_ci(r['asr'], 2)} | {_ci(r['q_mean'], 1)} | {_ci(r['q_median'], 1)} | "
                f"{r['iou']:.2f} [{r['iou_ci'][0]:.2f}, {r['iou_ci'][1]:.2f}] |")
        if ref:
            line += (f" {_ci(r['ratio_mean'], 2)} | {_ci(r['ratio_median'], 2)} |" if "ratio_mean" in r
                     else " – | – |")
        lines.append(line)
    return "\n".join(lines)


def curves(run: Path, png: Path, budget: int = 1000) -> None:
    """ASR against the per-image query budget (a success counts from its query count on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gs = groups(load(run))
    models = sorted({k[0] for k in gs})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    grid = np.unique(np.round(np.logspace(0, np.log10(budget), 200)))
    for ax, model in zip(axes[0], models):
        for (m, interp, attack), g in sorted(gs.items()):
            if m != model:
                continue
            q, ok = arrays(g, sorted(g))
            ax.plot(grid, [(ok & (q <= b)).mean() for b in grid], label=f"{attack} ({interp})")
        ax.set_xscale("log")
        ax.set(title=model, xlabel="queries per image", ylabel="ASR", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--ref", default=None, help="attack label the ratios are taken against")
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--vs", action="append", default=[], metavar="RUN:LABEL",
                    help="paired IoU change against attack LABEL of run folder RUN (same images; repeatable)")
    a = ap.parse_args(argv)
    rows = summarize(a.run, a.ref)
    text = markdown(rows, a.ref)
    for vs in a.vs:
        ref_run, _, label = vs.rpartition(":")
        text += "\n\n" + paired_markdown(paired_iou(a.run, Path(ref_run), label), label)
    print(text)
    if a.md:
        a.md.write_text(text + "\n")
    if a.plot:
        curves(a.run, a.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
