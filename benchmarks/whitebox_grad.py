#!/usr/bin/env python
"""The Grad rows of the white-box benchmark (issue #16 item 1) and select="best" vs "last"
(issue #17 item 5), read from committed per-image records; writes
benchmarks/results/whitebox_grad.md (then `python benchmarks/make_benchmarks_md.py`).

    python benchmarks/whitebox_grad.py

Sources: benchmarks/results/runs/whitebox-seeds (test split, seeds 0-2) and
benchmarks/results/runs/grad-levers (val split, the lever search); the "before" rows are the
aggregates in benchmarks/results/whitebox.jsonl, measured before the exact cross-entropy.
Intervals: 95% percentile bootstrap over the images (idlsec.metrics.stats); a difference between
two attacks on the same images and targets (same seed, same index) is a paired bootstrap of the
per-image differences.
"""

from __future__ import annotations

import gzip
import json
import statistics
from pathlib import Path

from idlsec.metrics.stats import bootstrap_ci, format_ci

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def records(run: str) -> list[dict]:
    with gzip.open(RESULTS / "runs" / run / "results.jsonl.gz", "rt") as f:
        return [json.loads(x) for x in f if x.strip()]


def meta(run: str) -> tuple[str, str]:
    m = json.loads((RESULTS / "runs" / run / "suite.json").read_text())
    r = (m.get("runs") or [{}])[-1]
    mach = r.get("machine", {})
    return " ".join(r.get("command", [])), (f"{mach.get('cpu', '?')} ({mach.get('cpus', '?')} cores), "
                                            f"device {mach.get('device', '?')}, torch {mach.get('torch', '?')}, "
                                            f"{mach.get('threads', '?')} thread(s)")


def ci(vals, spec="{:.2f}") -> str:
    return format_ci(statistics.fmean(vals), *bootstrap_ci(vals), spec) if vals else "–"


def pick(recs, interp, attack, seeds=None):
    return [r for r in recs if r["interpreter"] == interp and r["attack"] == attack
            and (seeds is None or r["seed"] in seeds)]


def row(label, recs, extra=""):
    ok = [r for r in recs if r["success"]]
    seeds = ",".join(str(s) for s in sorted({r["seed"] for r in recs}))
    return (f"| {label} | {seeds} | {len(recs)} | {ci([float(r['success']) for r in recs])} | "
            f"{ci([r['iou_topk_mean'] for r in recs])} | {ci([r['iou_topk_mean'] for r in ok])} | "
            f"{ci([r['map_l1'] for r in recs])} | {ci([r['l2'] for r in recs], '{:.3f}')} |{extra}")


def paired(a, b) -> str:
    """Mean IoU difference b − a over the images both hold, with its paired interval."""
    ia = {(r["seed"], r["index"]): r["iou_topk_mean"] for r in a}
    d = [r["iou_topk_mean"] - ia[(r["seed"], r["index"])] for r in b if (r["seed"], r["index"]) in ia]
    return format_ci(statistics.fmean(d), *bootstrap_ci(d), "{:+.3f}") + f" (n {len(d)})"


HEAD = ("| configuration | seeds | n | ASR | IoU (all) | IoU (succ.) | map L1 | pert. L2 |",
        "|---|---|---|---|---|---|---|---|")


def main() -> int:
    ws, lv = records("whitebox-seeds"), records("grad-levers")
    (ws_cmd, ws_machine), (lv_cmd, _) = meta("whitebox-seeds"), meta("grad-levers")
    before = [json.loads(x) for x in (RESULTS / "whitebox.jsonl").read_text().splitlines() if x.strip()]
    old = {(r["part"], r["attack"]): r for r in before
           if r.get("interpreter") == "grad" and r.get("model") == "cifar10-resnet20"}
    out = ["## Grad rows and the iterate ADV^2 returns (seeds, intervals)", "",
           f"Command: `{ws_cmd}` on {ws_machine}. Lever search: `{lv_cmd}`. Figures: "
           "`python benchmarks/whitebox_grad.py` from the committed per-image records "
           "(`runs/whitebox-seeds`, `runs/grad-levers`); `[lo, hi]`: 95% bootstrap interval over "
           "the images, seeds pooled (docs/protocol.md).", "",
           "cifar10-resnet20, eps 8/255, alpha 1/255, targeted (random targets), reduced for the "
           "CPU: 50 warm-up + 150 joint steps (the papers': 300 + 1000, Grad 300 + 704); CAM 16 and "
           "Grad 8 correctly classified test images per seed. PGD: 200 sign steps, no random start.",
           "", "### Grad: before and after the exact cross-entropy", "", *HEAD]
    for attack in ("pgd-200", "adv2", "advedge"):
        out.append(row(f"grad / {attack}", pick(ws, "grad", attack)))
        if attack != "pgd-200":
            out.append(row(f"grad / {attack}, seed 0 only", pick(ws, "grad", attack, {0})))
    for attack in ("adv2", "advedge"):
        for part, what in (("small", "CPU, 8 images, seed 0, 50 + 150 steps"),
                           ("full", "GPU, 100 images, seed 0, 300 + 704 steps")):
            r = old.get((part, attack))
            if r:
                out.append(f"| before: grad / {attack} ({what}; aggregate only) | 0 | {r['n']} | "
                           f"{r['asr']:.2f} | {r['iou']:.2f} | – | {r['l1']:.2f} | {r['l2']:.3f} |")
    out += ["", "The before rows used `F.cross_entropy` (its gradient loses p_y − 1 when p_y rounds "
            "to 1 in float32) and are aggregates without per-image records; the seed-0 rows use "
            "the same settings, seed and selection rule (the before rows have no records, so the "
            "images and targets are not checked to be identical).", "",
            "### Grad: levers, tuned on val, reported on test", "", *HEAD]
    for interp, attack, what in (("grad", "adv2", "ADV^2's settings (tau surrogate, c0 0.001)"),
                                 ("grad", "adv2-c0.01", "c0 0.01 (staircase x10)"),
                                 ("grad-softplus10", "adv2", "softplus surrogate, beta 10")):
        out.append(row(f"val: {what}", pick(lv, interp, attack)))
    base = pick(lv, "grad", "adv2")
    for interp, attack in (("grad", "adv2-c0.01"), ("grad-softplus10", "adv2")):
        out.append(f"| val: IoU difference {interp}/{attack} − grad/adv2 (paired) | | | | "
                   f"{paired(base, pick(lv, interp, attack))} | | | |")
    for attack in ("adv2", "advedge"):
        out.append(row(f"test: grad-softplus10 / {attack}", pick(ws, "grad-softplus10", attack)))
        out.append(f"| test: IoU difference softplus10 − tau, {attack} (paired) | | | | "
                   f"{paired(pick(ws, 'grad', attack), pick(ws, 'grad-softplus10', attack))} | | | |")
    out += ["", "Judged maps are always the exact Grad maps (true ReLU, exact cross-entropy); the "
            "levers change only the attack's backward pass or loss weight.", "",
            "### select=\"best\" vs \"last\"", "", *HEAD]
    for interp in ("cam", "grad"):
        for attack in ("pgd-200", "adv2", "adv2-last", "advedge", "advedge-last"):
            if pick(ws, interp, attack):
                out.append(row(f"{interp} / {attack}", pick(ws, interp, attack)))
        for attack in ("adv2", "advedge"):
            best, last = pick(ws, interp, attack), pick(ws, interp, f"{attack}-last")
            if best and last:
                out.append(f"| {interp}: IoU difference last − best, {attack} (paired: same "
                           f"trajectories) | | | | {paired(best, last)} | | | |")
    path = RESULTS / "whitebox_grad.md"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
