#!/usr/bin/env python
"""Choose between adversarially trained weights on 'val' (issue 18): clean and PGD-20 accuracy
of each candidate on val images that no training run used for its epoch choice.

``idlsec train --val-n 500`` keeps each run's best epoch by PGD-10 on the first 500 images of
``Dataset.sample(500, seed=0)`` of the val split; a choice *between* runs (and the weights packaged
now) on those same 500 images would reuse them, and 500 images give a standard error of about
2 points. This script scores every candidate on ``--n`` other val images (seeded sample of the
rest of the split): clean accuracy and PGD-20 accuracy at 8/255 (random start, 2/255 steps; robust
= correct clean and after the attack), with bootstrap intervals, and names the candidate with the
highest PGD-20 accuracy among those whose clean accuracy is within ``--clean-drop`` of the
reference's (the first candidate). Test images are never read. Caveat: weights descended from
the first stage of cifar10-resnet20-at (trained on all 50,000 training images, val included) have
seen these images; the longer a candidate trained without them, the less it remembers them, so
the comparison leans towards the weights closest to that stage (the packaged ones).

    python benchmarks/robust_select.py --candidates packaged=cifar10-resnet20-at \\
        a=/path/best.safetensors b=/path/other.safetensors [--n 2000] \\
        [--out benchmarks/results/robust_select.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def val_images(n: int, seed: int = 1):
    """``n`` val images outside the 500 that ``idlsec train --val-n 500`` validates on."""
    from idlsec.data import load_dataset

    vs = load_dataset("cifar10", "val")
    used = set(vs.sample(500, seed=0).tolist())
    order = torch.randperm(len(vs), generator=torch.Generator().manual_seed(seed)).tolist()
    idx = torch.tensor([i for i in order if i not in used][:n])
    return vs.get(idx)


def load(spec: str):
    """A zoo name, or a weights file for the robust ResNet-20 (the card of cifar10-resnet20-at)."""
    from idlsec.models import load_model

    if spec.endswith(".safetensors"):
        return load_model("cifar10-resnet20-at", weights=spec)
    return load_model(spec)


def main(argv=None) -> int:
    from idlsec.defenses.robustness import pgd_accuracy
    from idlsec.metrics.stats import bootstrap_ci
    from idlsec.runtime import machine_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", nargs="+", required=True, metavar="LABEL=MODEL|WEIGHTS")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--clean-drop", type=float, default=0.02,
                    help="largest clean-accuracy loss against the first candidate that may still be chosen")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/robust_select.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    x, y = val_images(a.n)
    rows = {}
    for item in a.candidates:
        label, _, spec = item.partition("=")
        t = time.process_time()
        res = pgd_accuracy(load(spec), x, y, steps=20, seed=0, per_image=True)
        clean, robust = res["clean_correct"], res["robust_correct"]
        rows[label] = {"spec": spec, "clean": sum(clean) / len(clean), "clean_ci95": bootstrap_ci(list(map(float, clean))),
                       "pgd20": sum(robust) / len(robust), "pgd20_ci95": bootstrap_ci(list(map(float, robust))),
                       "n": len(clean), "cpu_s": round(time.process_time() - t, 1)}
        print(label, json.dumps(rows[label]), flush=True)
    ref = rows[next(iter(rows))]["clean"]
    ok = [k for k, r in rows.items() if r["clean"] >= ref - a.clean_drop]
    chosen = max(ok, key=lambda k: rows[k]["pgd20"])
    out = {"command": "python benchmarks/robust_select.py " + " ".join(argv or sys.argv[1:]),
           "machine": machine_info("cpu"), "n": a.n, "clean_drop": a.clean_drop, "rows": rows, "chosen": chosen}
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print("chosen:", chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
