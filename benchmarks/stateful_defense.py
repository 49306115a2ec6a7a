"""Stateful oracle defense: BlackLight (Li et al., USENIX Security 2022) inside the black-box
oracle, against QuScore and Square, and its false alarms on benign query streams.

Attacks: untargeted, eps = 8/255, budget ``--budget`` queries per image, on the first ``--n``
correctly classified CIFAR-10 test images (seed 0) of cifar10-resnet56 (then of cifar10-vgg, a
cross-family victim on which QuScore's transfer stage fails more often, so its GA runs):
- QuScore, preset "idlsec", surrogate cifar10-resnet20, through ``BlackBox(monitor=BlackLight())``;
- torchattacks.Square (Linf, seed 0) whose model is the same monitored oracle (logits), every row
  charged to the benign image it lies within eps of.
Each image is its own stream (one client per image: the monitor sees only that image's queries,
the harder case for the defense). A wrapper around the victim records, per image, the 1-based
index of the first query the victim misclassifies ("success"); the oracle records the first
query the monitor flags ("detection", ``on_detect="record"``, so the attack runs unchanged).
A run counts as stopped when it is flagged at or before its first fooling query (with
``on_detect="refuse"`` the answer to that query would be withheld) or flagged and never fooling.

Benign streams (one client, the monitor called directly, as the oracle calls it): ``--benign``
distinct CIFAR-10 test images (the first ones in a seeded order); then the same images plus one
light augmentation of each (horizontal flip with p = 0.5 and a random crop after 4-pixel zero
padding, CIFAR's training augmentation), shuffled; the false-alarm rate is the share of queries
flagged.

    python benchmarks/stateful_defense.py                  # CPU: ~20 images, budget 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from idlsec.attacks import BlackBox, QuScore
from idlsec.data import load_dataset, select_images
from idlsec.defenses import BlackLight
from idlsec.models import load_model

# other monitor settings replayed on the recorded streams (the first is the paper's CIFAR-10 one)
SWEEP = [{}, {"threshold": 10}, {"threshold": 5}, {"window": 10}, {"quant_step": 100}]


class Recorder(nn.Module):
    """The victim, recording per benign image (nearest in Linf) its queries and the index of the
    first one it misclassifies (-1: none)."""

    def __init__(self, model, x0, y):
        super().__init__()
        self.model, self.x0, self.y = model, x0.flatten(1), y
        self.card = model.card
        self.counts = torch.zeros(len(x0), dtype=torch.long)
        self.first_fool = torch.full((len(x0),), -1, dtype=torch.long)
        self.rows, self.owners = [], []           # every query, in order, for the replays

    def forward(self, x):
        logits = self.model(x)
        owner = torch.cdist(x.detach().flatten(1), self.x0, p=float("inf")).argmin(1).cpu()
        self.rows.append(x.detach().cpu().float())
        self.owners.append(owner)
        wrong = (logits.argmax(1).cpu() != self.y[owner])
        for r in range(len(owner)):      # a few rows per call: the evaluation, not a hot path
            i = int(owner[r])
            self.counts[i] += 1
            if wrong[r] and self.first_fool[i] < 0:
                self.first_fool[i] = self.counts[i]
        return logits


class OracleNet(nn.Module):
    """The monitored oracle as a logits model for torchattacks; rows charged to the nearest x0."""

    def __init__(self, oracle, x0):
        super().__init__()
        self.oracle, self.x0 = oracle, x0.flatten(1)
        self.dummy = nn.Parameter(torch.zeros(1))       # torchattacks reads the device from it

    def forward(self, x):
        ids = torch.cdist(x.detach().flatten(1), self.x0, p=float("inf")).argmin(1)
        return self.oracle(x, ids)


def summarize(detect, success, budget):
    """Per-run detection index and first fooling index (1-based, -1: none) -> the row."""
    runs = []
    for d, s in zip(detect.tolist(), success.tolist()):
        runs.append({"detected_at": d, "fooled_at": s,
                     "stopped": d > 0 and (s < 0 or d <= s),
                     "strictly_before": d > 0 and (s < 0 or d < s)})
    det = [r["detected_at"] for r in runs if r["detected_at"] > 0]
    fooled = [r["fooled_at"] for r in runs if r["fooled_at"] > 0]
    n = len(runs)
    return {
        "runs": n,
        "detection_rate": sum(r["stopped"] for r in runs) / n,
        "detected_strictly_before_success": sum(r["strictly_before"] for r in runs) / n,
        "flagged_at_all": len(det) / n,
        "queries_to_detection_median": statistics.median(det) if det else None,
        "asr_undefended": len(fooled) / n,
        "queries_to_success_median": statistics.median(fooled) if fooled else None,
        "fooled_within_5_queries": sum(1 for s in fooled if s <= 5) / n,
        "budget": budget,
        "per_run": runs,
    }


def first_flags(flags, owners, n):
    """Per owner, the 1-based index (among its own queries) of its first flagged query (-1)."""
    onehot = nn.functional.one_hot(owners, n)
    index = (onehot.cumsum(0) * onehot).sum(1)
    big = torch.iinfo(torch.long).max
    first = torch.full((n,), big, dtype=torch.long).scatter_reduce(
        0, owners[flags], index[flags], "amin")
    return torch.where(first == big, -1, first)


def replay(rec, monitor):
    """The monitor on a recorded query stream, as the oracle would have shown it (record mode)."""
    rows, owners = torch.cat(rec.rows), torch.cat(rec.owners)
    return first_flags(monitor.observe(rows, owners), owners, len(rec.counts))


def run_quscore(target, surrogate, x, y, args):
    rec = Recorder(target, x, y)
    oracle = BlackBox(rec, max_queries=args.budget, monitor=BlackLight())
    atk = QuScore(oracle, surrogates=[surrogate], preset="idlsec", surrogate_interpreter="cam",
                  seed=0, max_queries=args.budget)
    atk.run(x, y)
    assert torch.equal(oracle.queries_per_image(torch.arange(len(x))), rec.counts)
    detect = oracle.detections(torch.arange(len(x)))
    assert torch.equal(detect, replay(rec, BlackLight()))     # the replay is exact
    return summarize(detect, rec.first_fool, args.budget), rec


def run_square(target, x, y, args):
    import torchattacks

    rec = Recorder(target, x, y)
    oracle = BlackBox(rec, output="logits", max_queries=None, monitor=BlackLight())
    atk = torchattacks.Square(OracleNet(oracle, x).eval(), norm="Linf", eps=args.eps,
                              n_queries=args.budget, seed=0)
    atk(x, y)
    assert torch.equal(oracle.queries_per_image(torch.arange(len(x))), rec.counts)
    detect = oracle.detections(torch.arange(len(x)))
    assert torch.equal(detect, replay(rec, BlackLight()))     # the replay is exact
    return summarize(detect, rec.first_fool, args.budget), rec


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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--budget", type=int, default=1000)
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--benign", type=int, default=1000, help="distinct benign images in the stream")
    p.add_argument("--attacks", default="quscore,square")
    p.add_argument("--targets", default="cifar10-resnet56,cifar10-vgg",
                   help="victims; the first is the main one (cifar10-vgg: cross-family, where "
                        "QuScore's transfer stage fails more often and its GA runs)")
    p.add_argument("--no-sweep", dest="sweep", action="store_false",
                   help="skip the other monitor settings (replayed on the recorded streams)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/stateful_defense.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    started = time.perf_counter()
    argv = sys.argv[1:] if argv is None else argv
    result = {"command": shlex.join(["python", "benchmarks/stateful_defense.py", *argv]),
              "machine": f"{os.uname().machine} CPU, {os.cpu_count()} cores (shared), "
                         f"torch {torch.__version__}",
              "monitor": repr(BlackLight()), "victims": args.targets.split(","),
              "surrogate": "cifar10-resnet20",
              "eps": args.eps, "n": args.n, "budget": args.budget, "attacks": {}}

    def save():
        result["seconds"] = time.perf_counter() - started
        Path(args.out).write_text(json.dumps(result, indent=2))

    data = load_dataset("cifar10", "test")
    surrogate = load_model("cifar10-resnet20")
    recs = {}
    for t_index, tname in enumerate(args.targets.split(",")):
        target = load_model(tname)
        sel = select_images(data, args.n, seed=0, model=target, correct_only=True)
        x, y = sel.x, sel.y
        for name in args.attacks.split(","):
            t = time.perf_counter()
            r, recs[f"{name}@{tname}"] = (run_quscore(target, surrogate, x, y, args)
                                          if name == "quscore" else run_square(target, x, y, args))
            r["seconds"] = time.perf_counter() - t
            result["attacks"][f"{name}@{tname}"] = r
            brief = {k: v for k, v in r.items() if k != "per_run"}
            print(name, tname, json.dumps(brief), flush=True)
            save()
        if t_index == 0:    # the benign streams after the main victim's rows
            result["benign"] = benign(data, args)
            print("benign", json.dumps(result["benign"]), flush=True)
            save()
    if not args.sweep:
        return
    # other settings, on the same recorded attack streams (record mode changes no query)
    result["sweep"] = []
    for config in SWEEP:
        t = time.perf_counter()
        row = {"config": repr(BlackLight(**config)), "attacks": {}}
        for key, rec in recs.items():
            r = summarize(replay(rec, BlackLight(**config)), rec.first_fool, args.budget)
            row["attacks"][key] = {k: r[k] for k in ("detection_rate", "flagged_at_all",
                                                     "queries_to_detection_median")}
        row["benign"] = benign(data, args, config)
        row["seconds"] = time.perf_counter() - t
        result["sweep"].append(row)
        print("sweep", json.dumps(row), flush=True)
        save()


if __name__ == "__main__":
    main()
