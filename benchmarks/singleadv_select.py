#!/usr/bin/env python
"""Choose SingleADV's hyperparameters from a tuning run on the validation split.

    python benchmarks/singleadv_select.py benchmarks/results/runs/singleadv-tune [--out FILE]

Reads the run's universal jobs (benchmarks/singleadv-tune.yaml: measured on split 'val'), groups
them by their hyperparameters (κ, λ, inhibition weight w, ...: every SingleADV parameter except
source/target/seed), averages over the pairs and seeds, and picks the setting with the largest
mean (fooling rate − unintended fooling rate), fooling counted over correctly classified source
images; ties go to the higher map IoU. Prints the table and the choice and writes it as JSON
(default: DIR/selection.json). Refuses a run measured on any split but 'val'."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

SKIP = {"source", "target", "seed"}


def select(run_dir: Path) -> dict:
    entries = [json.loads(p.read_text()) for p in sorted((run_dir / "jobs").glob("universal-*.json"))]
    if not entries:
        raise SystemExit(f"error: no universal jobs in {run_dir}/jobs")
    groups: dict[str, list[dict]] = {}
    for e in entries:
        r = e["result"]
        if r["config"].get("split", "test") != "val":
            raise SystemExit(f"error: {e['job']['label']} was measured on split "
                             f"{r['config'].get('split', 'test')!r}; tune on 'val' only")
        key = json.dumps({k: v for k, v in r["params"].items() if k not in SKIP}, sort_keys=True)
        groups.setdefault(key, []).append(r)
    rows = []
    for key, rs in groups.items():
        fool = statistics.mean(r["fooling_rate_test"] for r in rs)
        unint = statistics.mean(r["unintended_fooling_rate"] for r in rs)
        iou = statistics.mean(r["iou_topk_mean"] for r in rs)
        rows.append({"params": json.loads(key), "n_jobs": len(rs), "fooling_rate": fool,
                     "unintended_fooling_rate": unint, "iou_topk_mean": iou, "score": fool - unint})
    rows.sort(key=lambda x: (-x["score"], -x["iou_topk_mean"]))
    return {"run": str(run_dir), "criterion": "max mean(fooling_rate - unintended_fooling_rate) on "
            "split val, ties by IoU", "chosen": rows[0]["params"], "table": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sel = select(args.run_dir)
    print("| κ | λ | w | jobs | fool (val) | unint. | IoU | score |\n|---|---|---|---|---|---|---|---|")
    for r in sel["table"]:
        p = r["params"]
        print(f"| {p.get('kappa')} | {p.get('lam')} | {p.get('inhibition')} | {r['n_jobs']} | "
              f"{r['fooling_rate']:.3f} | {r['unintended_fooling_rate']:.3f} | {r['iou_topk_mean']:.3f} | "
              f"{r['score']:.3f} |")
    c = sel["chosen"]
    print(f"chosen: kappa={c.get('kappa')} lam={c.get('lam')} inhibition={c.get('inhibition')}")
    out = args.out or args.run_dir / "selection.json"
    out.write_text(json.dumps(sel, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
