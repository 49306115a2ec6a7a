"""BlackLight (Li et al., USENIX Security 2022) false alarms on benign query streams. The attack
side (BlackLight inside the oracle against QuScore and Square, detection before success) is the
suite benchmarks/stateful.yaml (``monitor: blacklight`` on its attack entries):

    idlsec bench benchmarks/stateful.yaml --out runs/stateful && idlsec report runs/stateful

Benign streams (one client, the monitor called directly, as the oracle calls it): ``--benign``
distinct CIFAR-10 test images (the first ones in a seeded order); then the same images plus one
light augmentation of each (horizontal flip with p = 0.5 and a random crop after 4-pixel zero
padding, CIFAR's training augmentation), shuffled; the false-alarm rate is the share of queries
flagged. Each monitor setting of ``SWEEP`` (the first is the paper's CIFAR-10 one) is measured.

    python benchmarks/stateful_defense.py [--benign 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

from idlsec.data import load_dataset
from idlsec.defenses import BlackLight

ROOT = Path(__file__).resolve().parents[1]
SWEEP = [{}, {"threshold": 10}, {"threshold": 5}, {"window": 10}, {"quant_step": 100}]


def augment(x, g):
    flip = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    dx, dy = torch.randint(0, 9, (2, len(x)), generator=g)
    rows = (dy[:, None] + torch.arange(32))[:, None, :, None].expand(-1, 3, -1, 40)
    x = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(32))[:, None, None, :].expand(-1, 3, 32, -1)
    return x.gather(3, cols)


def benign(data, args, config=None):
    config = config or {}
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(data.images), generator=g)[:args.benign]
    x = data.images[idx].float() / 255
    out = {}
    t = time.perf_counter()
    flags = BlackLight(**config).observe(x)
    out["distinct"] = {"queries": len(x), "false_alarms": int(flags.sum()),
                       "false_alarm_rate": flags.float().mean().item(),
                       "seconds_per_query": (time.perf_counter() - t) / len(x)}
    aug = augment(x, g)
    both = torch.cat([x, aug])
    source = torch.cat([torch.arange(len(x)), torch.arange(len(x))])
    order = torch.randperm(len(both), generator=g)
    flags = BlackLight(**config).observe(both[order])
    src = source[order]
    seen_before = torch.zeros(len(order), dtype=torch.bool)   # its other version came earlier
    first = {}
    for r, s in enumerate(src.tolist()):
        seen_before[r] = s in first
        first.setdefault(s, r)
    out["with_augmentations"] = {
        "queries": len(order), "false_alarms": int(flags.sum()),
        "false_alarm_rate": flags.float().mean().item(),
        "flag_rate_on_second_versions": flags[seen_before].float().mean().item(),
        "flag_rate_on_first_versions": flags[~seen_before].float().mean().item()}
    return out


def run_header(script: str, argv) -> dict:
    """The command line that reproduces a run of ``script`` and the machine it ran on (the
    stateful benchmark scripts share it)."""
    argv = sys.argv[1:] if argv is None else argv
    return {"command": shlex.join(["python", f"benchmarks/{script}", *argv]),
            "machine": f"{os.uname().machine} CPU, {os.cpu_count()} cores (shared), torch {torch.__version__}, "
                       f"{torch.get_num_threads()} thread(s), process time"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benign", type=int, default=1000, help="distinct benign images in the stream")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/stateful_benign.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    result = {**run_header("stateful_defense.py", argv), "rows": []}
    data = load_dataset("cifar10", "test")
    for config in SWEEP:
        t = time.perf_counter()
        row = {"config": repr(BlackLight(**config)), **benign(data, args, config)}
        row["seconds"] = time.perf_counter() - t
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
