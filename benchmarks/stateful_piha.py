"""PIHA-style stateful monitor (idlsec.defenses.PIHA; Choi et al., AsiaCCS 2023): thresholds
tuned on 'val' benign streams, false alarms on 'test' streams, near-duplicate detection, cost per
query, and the adaptive attacker. The attack runs with the monitor in the oracle are the suite
benchmarks/stateful-piha.yaml.

1. Benign streams (one client, the monitor called as the oracle calls it), per seed 0, 1, 2:
   ``--benign`` distinct CIFAR-10 images in a seeded order; then the same images plus one light
   augmentation of each (flip p = 0.5, random crop after 4-pixel padding: benchmarks/
   stateful_defense.py's), shuffled. A false alarm is a flagged benign query.
2. Tuning on 'val': linf keeps 2 * eps = 16/255 (the value that flags every later query of any
   L∞-8/255 attack) if its val false-alarm rate is <= 1 % on the distinct streams, and records
   the largest k/255 that would still pass (the margin); hamming takes the largest bit count that
   passes. The chosen values are then measured on 'test'.
3. Near-duplicates on 'test' (no model): each image followed by two perturbed copies within
   8/255 (dense ±eps signs; Square's vertical stripes; signs of smooth noise, transfer-like);
   share of copies flagged.
4. Cost: process time per query, one query per call, against a one-stream history of 1,000 and
   10,000 CIFAR-10 images (BlackLight beside, at 1,000).
5. Adaptive attacker (``--adaptive``): QuScore and Square on cifar10-resnet56 and cifar10-vgg
   (20 test images each, seed 0, ``--adaptive-budget`` queries) whose every query gets a fresh random low-frequency
   shift (±sigma per 4x4 cell and channel, the monitor's own grid) on top of the attack's ±8/255;
   the returned example (within 8/255) is then submitted once unshifted, as the deployed system
   must classify it. Evaded: that final answer fools the model and no query of the stream was
   flagged (PIHA linf and hamming recorded on the same queries).

    python benchmarks/stateful_piha.py [--benign 1000] [--adaptive]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from stateful_defense import augment, run_header

from idlsec.attacks import BlackBox, QuScore, Square
from idlsec.data import load_dataset, select_images
from idlsec.defenses import PIHA, BlackLight
from idlsec.metrics.stats import bootstrap_ci
from idlsec.models import load_model

ROOT = Path(__file__).resolve().parents[1]
EPS = 8 / 255
SEEDS = (0, 1, 2)
TOL = PIHA.TOLERANCE


def streams(data, n, seed):
    """The distinct stream and the shuffled stream with augmented copies (as stateful_defense)."""
    g = torch.Generator().manual_seed(seed)
    x = data.images[torch.randperm(len(data.images), generator=g)[:n]].float() / 255
    both = torch.cat([x, augment(x, g)])
    return x, both[torch.randperm(len(both), generator=g)]


def nearest(metric, x):
    """Exact nearest-earlier distances of one stream (linf threshold 1: nothing pruned)."""
    return PIHA(metric=metric, threshold=1.0 if metric == "linf" else 0).distances(x)


def rate(d, t):
    flags = (d <= t + TOL).float()
    lo, hi = bootstrap_ci(flags.tolist())
    return {"rate": flags.mean().item(), "ci95": [lo, hi], "flagged": int(flags.sum()),
            "queries": len(flags)}


def benign(split, n):
    data = load_dataset("cifar10", split)
    out = {m: {"distinct": [], "augmented": []} for m in PIHA.METRICS}
    for s in SEEDS:
        x, both = streams(data, n, s)
        for m in PIHA.METRICS:
            out[m]["distinct"].append(nearest(m, x))
            out[m]["augmented"].append(nearest(m, both))
    return {m: {k: torch.cat(v) for k, v in d.items()} for m, d in out.items()}


def tune(val):
    ok = lambda m, t: (val[m]["distinct"] <= t + TOL).float().mean().item() <= 0.01  # noqa: E731
    lin = [k for k in range(1, 256) if ok("linf", k / 255)]
    ham = [t for t in range(0, 337) if ok("hamming", t)]
    return {"linf": 2 * EPS if ok("linf", 2 * EPS) else max(lin) / 255,
            "linf_largest_passing": max(lin) / 255, "hamming": max(ham)}


def near_duplicates(data, n, thresholds):
    g = torch.Generator().manual_seed(0)
    x = data.images[:n].float() / 255
    sign = lambda shape: torch.randint(0, 2, shape, generator=g).float() * 2 - 1  # noqa: E731
    smooth = lambda: torch.sign(F.interpolate(torch.randn(n, 3, 8, 8, generator=g), size=32,  # noqa: E731
                                              mode="bilinear", align_corners=False))
    kinds = {"dense signs": lambda: sign(x.shape), "Square stripes": lambda: sign((n, 3, 1, 32)),
             "smooth signs": smooth}
    out = {}
    for name, make in kinds.items():
        q = torch.stack([x, (x + EPS * make()).clamp(0, 1), (x + EPS * make()).clamp(0, 1)], 1)
        ids = torch.arange(n).repeat_interleave(3)
        row = {}
        for m in PIHA.METRICS:
            f = PIHA(metric=m, threshold=thresholds[m]).observe(q.flatten(0, 1), ids).view(n, 3)
            row[m] = {"first": f[:, 0].float().mean().item(), "copies": f[:, 1:].float().mean().item()}
        bl = BlackLight().observe(q.flatten(0, 1), ids).view(n, 3)
        row["blacklight"] = {"first": bl[:, 0].float().mean().item(),
                             "copies": bl[:, 1:].float().mean().item()}
        out[name] = row
    return out


def cost(thresholds):
    hist = load_dataset("cifar10", "test").images.float() / 255
    qs = load_dataset("cifar10", "val").images[:200].float() / 255
    rows = []
    mons = [("piha linf", lambda: PIHA(threshold=thresholds["linf"])),
            ("piha hamming", lambda: PIHA(metric="hamming", threshold=thresholds["hamming"])),
            ("blacklight", BlackLight)]
    for name, make in mons:
        for size in (1000, 10000):
            if name == "blacklight" and size > 1000:
                continue
            mon = make()
            for s in range(0, size, 1000):
                mon.observe(hist[s:s + 1000])
            t = time.process_time()
            for i in range(len(qs)):
                mon.observe(qs[i:i + 1])
            rows.append({"monitor": name, "history": size,
                         "ms_per_query": 1000 * (time.process_time() - t) / len(qs)})
    return rows


class Recorder:
    """Several monitors on the same queries; the oracle sees the first one's flags; each one's
    first flagged query index per stream is kept."""

    def __init__(self, monitors):
        self.monitors = monitors
        self.reset()

    def reset(self):
        for m in self.monitors.values():
            m.reset()
        self.seen, self.first = {}, {k: {} for k in self.monitors}

    def observe(self, x, streams):
        s = streams.tolist()
        index = []
        for i in s:
            self.seen[i] = self.seen.get(i, 0) + 1
            index.append(self.seen[i])
        flags = {}
        for k, m in self.monitors.items():
            flags[k] = m.observe(x, streams)
            for i, j, f in zip(s, index, flags[k].tolist()):
                if f and i not in self.first[k]:
                    self.first[k][i] = j
        return next(iter(flags.values()))


class Shifted(BlackBox):
    """The adaptive attacker's side of the boundary: every query it sends gets a fresh random
    ±sigma shift, constant on each block x block cell and channel (it is the attacker's doing;
    the oracle and its monitor see the shifted image)."""

    def __init__(self, model, *, sigma, block=4, seed=0, **kw):
        super().__init__(model, **kw)
        self.sigma, self.block = sigma, block
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, x, ids=None, *, maps=False):
        n, c, h, w = x.shape
        sign = torch.randint(0, 2, (n, c, h // self.block, w // self.block), generator=self.g)
        shift = F.interpolate(sign.float() * 2 - 1, size=(h, w), mode="nearest") * self.sigma
        return super().__call__((x + shift.to(x.device)).clamp(0, 1), ids, maps=maps)


def adaptive(args, thresholds):
    surrogate = load_model("cifar10-resnet20")
    rows = []
    for victim in ("cifar10-resnet56", "cifar10-vgg"):
        model = load_model(victim)
        sel = select_images(load_dataset("cifar10", "test"), 20, seed=0, model=model,
                            correct_only=True)
        rows += adaptive_on(args, thresholds, victim, model, surrogate, sel)
    return rows


def adaptive_on(args, thresholds, victim, model, surrogate, sel, monitors=None):
    """The shifted attacker's rows; ``monitors()``: the monitors recorded on the same queries
    (default PIHA linf and hamming at ``thresholds``; benchmarks/stateful_gate.py passes the gate)."""
    monitors = monitors or (lambda: {"linf": PIHA(threshold=thresholds["linf"]),
                                     "hamming": PIHA(metric="hamming", threshold=thresholds["hamming"])})
    rows = []
    for sigma in args.sigmas:
        for name in ("quscore", "square"):
            rec = Recorder(monitors())
            oracle = Shifted(model, sigma=sigma / 255, max_queries=args.adaptive_budget + 1,
                             monitor=rec)
            torch.manual_seed(0)
            t = time.process_time()
            if name == "quscore":
                atk = QuScore(oracle, surrogates=[surrogate], preset="idlsec", eps=EPS, surrogate_interpreter="cam",
                              max_queries=args.adaptive_budget, seed=0)
            else:
                atk = Square(oracle, eps=EPS, max_queries=args.adaptive_budget, seed=0)
            res = atk.run(sel.x, sel.y)
            ids = torch.arange(len(sel.x))
            final = BlackBox.__call__(oracle, res.x_adv, ids).argmax(1)   # unshifted submission
            fooled = (final != sel.y).tolist()
            assert float((res.x_adv - sel.x).abs().max()) <= EPS + 1e-6
            row = {"model": victim, "attack": name, "sigma_255": sigma, "runs": len(fooled),
                   "asr_final": sum(fooled) / len(fooled),
                   "queries_median": float(oracle.queries_per_image().float().median()),
                   "cpu_seconds": time.process_time() - t}
            for k in rec.monitors:
                det = [rec.first[k].get(i, -1) for i in ids.tolist()]
                evaded = [f and d < 0 for f, d in zip(fooled, det)]
                lo, hi = bootstrap_ci([float(e) for e in evaded])
                row[k] = {"evaded": sum(evaded) / len(evaded), "evaded_ci95": [lo, hi],
                          "flagged": sum(d > 0 for d in det) / len(det),
                          "first_flag_median": (sorted(d for d in det if d > 0)[
                              sum(d > 0 for d in det) // 2] if any(d > 0 for d in det) else None)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def pct(r):
    return f"{100 * r['rate']:.2f}% [{100 * r['ci95'][0]:.2f}, {100 * r['ci95'][1]:.2f}]"


def markdown(out):
    th = out["thresholds"]
    name = {"linf": f"PIHA linf, threshold {th['linf'] * 255:.0f}/255",
            "hamming": f"PIHA hamming, threshold {th['hamming']} of 336 bits"}
    lines = ["## Stateful oracle defense: PIHA-style monitor (benign streams, cost, adaptive)", "",
             f"Command: `{out['command']}`  ",
             f"Machine: {out['machine']}.  ",
             f"Benign streams: seeds {out['seeds']}, each "
             f"{out['test']['linf']['distinct']['queries'] // len(out['seeds'])} distinct "
             "CIFAR-10 images in a seeded order, then the same plus one augmented copy "
             "of each (flip, 4-pixel crop), shuffled; a false alarm is a flagged benign query; "
             "rates pooled over the seeds with 95% bootstrap intervals. Thresholds tuned on "
             f"'val' (linf: 2 x 8/255 kept, the largest passing was "
             f"{th['linf_largest_passing'] * 255:.0f}/255; hamming: the largest bit count with "
             "<= 1% val false alarms on distinct images), reported on 'test'.", "",
             "| monitor | split | false alarms, distinct | false alarms, with augmented copies |",
             "|---|---|---|---|"]
    for split in ("val", "test"):
        for m in ("linf", "hamming"):
            r = out[split][m]
            lines.append(f"| {name[m]} | {split} | {pct(r['distinct'])} | {pct(r['augmented'])} |")
    first = max(r[m]["first"] for r in out["near_duplicates"].values() for m in r)
    lines += ["", "Near-duplicates ('test', no model): each of 1,000 images followed by two "
              "copies within 8/255; share of the copies flagged (first versions flagged: at "
              f"most {first:.3f}).", "", "| perturbation | PIHA linf | PIHA hamming | BlackLight |",
              "|---|---|---|---|"]
    for kind, row in out["near_duplicates"].items():
        lines.append(f"| {kind} | " + " | ".join(
            f"{row[m]['copies']:.3f}" for m in ("linf", "hamming", "blacklight")) + " |")
    lines += ["", "Cost: CPU ms per query, one query per call, one stream holding the given "
              "history of CIFAR-10 images.", "", "| monitor | history | ms / query |",
              "|---|---|---|"]
    for r in out["cost"]:
        lines.append(f"| {r['monitor']} | {r['history']:,} | {r['ms_per_query']:.2f} |")
    if out.get("adaptive"):
        lines += ["", "Adaptive attacker (20 test images per victim, seed 0): every "
                  "query carries a fresh random ±sigma shift per 4x4 cell and channel on top of "
                  "the attack's ±8/255; the returned example (within 8/255) is then submitted "
                  "once unshifted. Evaded: that answer fools the model and no query of the "
                  "stream was flagged.", "",
                  "| victim | attack | sigma | final ASR | median queries | evaded linf "
                  "| evaded hamming | flagged linf | flagged hamming |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in out["adaptive"]:
            ev = [f"{r[k]['evaded']:.2f} [{r[k]['evaded_ci95'][0]:.2f}, "
                  f"{r[k]['evaded_ci95'][1]:.2f}]" for k in ("linf", "hamming")]
            lines.append(f"| {r['model'].removeprefix('cifar10-')} | {r['attack']} | "
                         f"{r['sigma_255']:g}/255 | {r['asr_final']:.2f} | "
                         f"{r['queries_median']:g} | {ev[0]} | {ev[1]} | "
                         f"{r['linf']['flagged']:.2f} | {r['hamming']['flagged']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--benign", type=int, default=1000, help="distinct benign images per stream")
    p.add_argument("--adaptive", action="store_true", help="also run the adaptive attacker")
    p.add_argument("--adaptive-budget", type=int, default=300)
    p.add_argument("--sigmas", type=float, nargs="+", default=[24.0, 40.0],
                   help="the adaptive shifts, in 1/255")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/stateful_piha.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = {**run_header("stateful_piha.py", argv), "seeds": list(SEEDS)}
    val = benign("val", args.benign)
    th = out["thresholds"] = tune(val)
    out["val"] = {m: {k: rate(d, th[m]) for k, d in val[m].items()} for m in PIHA.METRICS}
    test = benign("test", args.benign)
    out["test"] = {m: {k: rate(d, th[m]) for k, d in test[m].items()} for m in PIHA.METRICS}
    out["near_duplicates"] = near_duplicates(load_dataset("cifar10", "test"), 1000, th)
    out["cost"] = cost(th)
    print(json.dumps({k: out[k] for k in ("thresholds", "val", "test")}, indent=1), flush=True)
    if args.adaptive:
        out["adaptive"] = adaptive(args, th)
    Path(args.out).write_text(json.dumps(out, indent=2))
    Path(args.out).with_suffix(".md").write_text(markdown(out))


if __name__ == "__main__":
    main()
