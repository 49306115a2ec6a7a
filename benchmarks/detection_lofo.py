#!/usr/bin/env python
"""Leave-one-family-out detection: tables and figures from a run's per-image records.

    python benchmarks/detection_lofo.py benchmarks/results/runs/detection-lofo [--plots]

Reads the run's ``jobs/detection-*.json`` (suite benchmarks/detection-lofo.yaml, protocol
``lofo``), pools the seeds (``idlsec.bench.detection_lofo.pooled_rows``: each image flagged at its
own seed's validation threshold, 95% percentile bootstrap intervals over the pooled images) and
prints the markdown tables BENCHMARKS.md shows. ``--plots`` writes
benchmarks/results/detection-lofo-roc.png (ROC curves of the seed-pooled scores, each shifted by
its seed's threshold so that the calibrated operating point is the same for every seed) and
detection-lofo-adaptive.png (TPR and evasion, non-adaptive vs adaptive, per detector), and copies
both to docs/img/ for docs/defenses.md."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(run: Path) -> list[dict]:
    out = []
    for p in sorted((Path(run) / "jobs").glob("detection-*.json")):
        r = json.loads(p.read_text())["result"]
        if r.get("protocol") == "lofo":
            out.append(r)
    return out


def _v(value, ci) -> str:
    if value is None:
        return "–"
    lo, hi = ci if ci else (None, None)
    return f"{value:.2f}" if lo is None else f"{value:.2f} [{lo:.2f}, {hi:.2f}]"


def markdown(rows: list[dict], results: list[dict], transfer_detectors=None) -> str:
    from idlsec.bench.detection_lofo import DETECTORS, transfer_rows

    fpr = results[0]["config"]["fpr"] if results else 0.05
    seeds = sorted(r["config"]["seed"] for r in results)
    plain = [r for r in rows if not r["adaptive"]]
    head = ("| attack | detector | trained on | ASR | n adv | TPR at val thr. | FPR (test benign) | "
            "AUROC (min–max) |\n|---|---|---|---|---|---|---|---|")
    lines = [f"Seeds {seeds} pooled; threshold at {fpr:g} FPR on validation benign images; TPR over "
             "the successful examples, FPR over the benign test images, both at that threshold; "
             "95% bootstrap intervals over the pooled images.", "", head]
    for r in plain:
        trained = "–" if r["detector"].startswith("squeeze") else ("yes (PGD family)" if r["trained_on"] else "**no**")
        lo, hi = r["auroc_range"]
        auc = "–" if r["auroc"] is None else f"{r['auroc']:.3f} ({lo:.3f}–{hi:.3f})"
        lines.append(f"| {r['attack']} | {r['detector']} | {trained} | {_v(r['asr'], r['asr_ci'])} | "
                     f"{r['n_adv']} | {_v(r['tpr'], r['tpr_ci'])} | {_v(r['fpr'], r['fpr_ci'])} | {auc} |")
    adaptive = [r for r in rows if r["adaptive"] and "paired" in r]
    if adaptive:
        lines += ["", "Adaptive attacker (descends the named detector's calibrated score) beside the "
                  "same attack without it, on the same test images; *evasion*: successful and "
                  "unflagged, over all attacked images.", "",
                  "| attack | detector | n | ASR | TPR | evasion | ASR adaptive | TPR adaptive | evasion adaptive |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in adaptive:
            p = r["paired"]
            lines.append(f"| {r['attack'].removeprefix('adaptive-')} | {r['detector']} | {r['n']} | "
                         f"{_v(p['asr'], p['asr_ci'])} | {_v(p['tpr'], p['tpr_ci'])} | "
                         f"{_v(p['evasion'], p['evasion_ci'])} | {_v(r['asr'], r['asr_ci'])} | "
                         f"{_v(r['tpr'], r['tpr_ci'])} | {_v(r['evasion'], r['evasion_ci'])} |")
    transfer = transfer_rows(results, transfer_detectors or DETECTORS)
    if transfer:
        lines += ["", "The adaptive examples crafted against one detector, scored by another at its own "
                  "threshold (what a refit catches):", "",
                  "| attack | crafted against | scored by | n adv | TPR | evasion |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['attack']} | {r['crafted_against']} | {r['detector']} | {r['n_adv']} | "
                  f"{_v(r['tpr'], r['tpr_ci'])} | {_v(r['evasion'], r['evasion_ci'])} |" for r in transfer]
    return "\n".join(lines)


def costs_and_rounds(results: list[dict]) -> str:
    """Latency (CPU seconds per image of each detector's score, mean over seeds) and, per refit
    round, the validation attacker's success and evasion against the detector it aimed at."""
    lines = []
    lat: dict[str, list] = {}
    for r in results:
        for k, v in (r.get("cpu_seconds_per_image") or {}).items():
            if v is not None:
                lat.setdefault(k, []).append(v)
    if lat:
        lines += ["Cost: CPU (process) seconds per image of the detector's score, scoring the benign "
                  "test images in batches (`ensemble`: 32 of them; 1 thread, shared 2-core machine, "
                  "mean over seeds): "
                  + ", ".join(f"`{k}` {sum(v) / len(v):.3f}" for k, v in lat.items()) + ".", ""]
    rounds: dict[str, list] = {}
    for r in results:
        for k, h in (r.get("hardening") or {}).items():
            rounds.setdefault(k, []).append(h)
    if rounds:
        lines += ["Refit rounds on validation images: the adaptive attacker aims at the previous "
                  "round's detector; the refit learns from its examples (seeds pooled).", "",
                  "| refit | attack | aimed at | n | ASR | evasion |", "|---|---|---|---|---|---|"]
        for k, hs in rounds.items():
            n = sum(h["n"] for h in hs)
            asr = sum(h["asr"] * h["n"] for h in hs) / n
            ev = sum(h["evasion"] * h["n"] for h in hs if "evasion" in h) / n
            lines.append(f"| {k.split('/')[0]} | adaptive-{hs[0]['attack']} | {hs[0]['against']} | {n} | "
                         f"{asr:.2f} | {ev:.2f} |")
    return "\n".join(lines)


def plot(rows: list[dict], results: list[dict], out_dir: Path = RESULTS) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from idlsec.metrics.detection import roc_curve

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, det in zip(axes, ("ensemble", "ensemble-hardened")):
        for attack, against in (("pgd", None), ("adv2", None), ("advedge", None), ("advedge+", None),
                                ("adaptive-adv2", det), ("adaptive-advedge+", det)):
            b, a = [], []
            for r in results:
                if det not in r["thresholds"]:
                    continue
                t = r["thresholds"][det]
                b += [i["scores"][det] - t for i in r["images"] if i["set"] == "benign"]
                a += [i["scores"][det] - t for i in r["images"] if i["set"] == attack
                      and i.get("adaptive_against") == against and i["success"]]
            if not a or not b:
                continue
            f, tp, _ = roc_curve(torch.tensor(b), torch.tensor(a))
            line, = ax.plot([0, *f.tolist()], [0, *tp.tolist()], "--" if against else "-",
                            label=f"{attack} (n={len(a)})")
            # the calibrated operating point: flagged when score > the seed's validation threshold
            ax.plot([sum(v > 0 for v in b) / len(b)], [sum(v > 0 for v in a) / len(a)], "o",
                    color=line.get_color(), ms=4)
        ax.axvline(results[0]["config"]["fpr"], color="grey", lw=0.6)
        ax.set(title=f"{det} (seeds pooled; dots: val threshold)", xlabel="FPR (benign test)",
               ylabel="TPR (successful examples)", xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    roc = out_dir / "detection-lofo-roc.png"
    fig.savefig(roc, dpi=110)
    plt.close(fig)
    ad = [r for r in rows if r["adaptive"] and "paired" in r]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    labels, width = [], 0.2
    for k, r in enumerate(ad):
        p = r["paired"]
        for j, (val, ci, name) in enumerate(((p["tpr"], p["tpr_ci"], "TPR"), (r["tpr"], r["tpr_ci"], "TPR adaptive"),
                                            (p["evasion"], p["evasion_ci"], "evasion"),
                                            (r["evasion"], r["evasion_ci"], "evasion adaptive"))):
            if val is None:
                continue
            lo, hi = ci
            err = [[val - lo], [hi - val]] if lo is not None else None
            ax.bar(k + (j - 1.5) * width, val, width, yerr=err, capsize=2, color=f"C{j}",
                   label=name if k == 0 else None)
        labels.append(f"{r['attack'].removeprefix('adaptive-')}\nvs {r['detector']}")
    ax.set_xticks(range(len(ad)), labels, fontsize=8)
    ax.set(ylim=(0, 1.2), ylabel="rate (95% CI)", title="non-adaptive vs adaptive (same test images)")
    ax.legend(fontsize=7, ncol=4, loc="upper center")
    fig.tight_layout()
    bars = out_dir / "detection-lofo-adaptive.png"
    fig.savefig(bars, dpi=110)
    plt.close(fig)
    docs = Path(__file__).resolve().parents[1] / "docs" / "img"  # docs/defenses.md shows the same files
    if out_dir == RESULTS and docs.is_dir():
        import shutil

        for p in (roc, bars):
            shutil.copyfile(p, docs / p.name)
    return [roc, bars]


def main(argv=None) -> int:
    from idlsec.bench.detection_lofo import pooled_rows

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--plots", action="store_true")
    args = ap.parse_args(argv)
    results = load(args.run)
    if not results:
        print(f"error: no lofo detection jobs in {args.run}/jobs", file=sys.stderr)
        return 2
    rows = pooled_rows(results)
    chain = [d for d in results[0]["thresholds"] if d.startswith("ensemble-random")]
    if "union" in results[0]["thresholds"]:  # a union run: its members score each other's attackers
        chain = [d for d in results[0]["thresholds"] if d not in ("ensemble", "squeeze")]
    print(markdown(rows, results, transfer_detectors=chain or None))
    extra = costs_and_rounds(results)
    if extra:
        print("\n" + extra)
    if args.plots:
        for p in plot(rows, results):
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
