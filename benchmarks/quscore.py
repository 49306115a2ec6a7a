"""QuScore benchmark: transfer + microbial GA on a score oracle, side by side with Square.

For each target (cifar10-resnet56: same family as the surrogate cifar10-resnet20; cifar10-vgg:
cross-family), each target interpreter (CAM, Grad) and each mode (untargeted, targeted), on the
first n correctly classified CIFAR-10 test images (seed 0), eps = 8/255:

- QuScore "idlsec": the default preset (stage A with input diversity and no untargeted
  refinement; square-window mutation and margin fitness in the microbial GA).
- QuScore "stealth": the same plus the margin + IoU fitness on the maps the oracle exposes; it
  stops at the first member that fools the target with mean top-k IoU >= 0.80 against the benign
  map, or ``--stealth-queries`` queries after its first fooling query, and returns the best
  fooling member found. After ``--prune-start`` (200) of those queries the GA stops for that image
  and ``stealth_search="prune"`` shrinks the best fooling member window by window
  (``--stealth-search ga``: the GA searches to the end, the configuration before the prune search).
- QuScore "released": ``preset="released"`` (±eps vertex genomes, bit-flip mutation 0.001,
  classification-only fitness), with the stage-A interpretation term made to send gradient.
- torchattacks.Square (Andriushchenko et al. 2020) at the same eps and budget, its queries counted
  the same way (every image row the victim evaluates is one query, charged to its image); it does
  not depend on the interpreter, so it runs once per target and mode.

IoU is the target interpreter's map of the returned example (undefended model, predicted class)
against its benign map, mean top-k IoU over k = 5%..50%, averaged over the successful images.
Then ASR of QuScore "idlsec" with each input-transform defense inside the oracle (resnet20 ->
resnet56, CAM, untargeted).

Rows run most important first (idlsec + Square untargeted, the defenses, targeted, stealth,
released); the markdown and JSON are rewritten after every row, and ``--max-minutes`` skips the
rows that would start after the cap (they are listed as not run).

    python benchmarks/quscore.py                       # CPU-sized (see --help for the reductions)
    python benchmarks/quscore.py --device cuda --n 100 --budget 10000 --max-minutes 5
"""

from __future__ import annotations

import argparse
import json
import math
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
from idlsec.defenses import get_defense
from idlsec.interpreters import INTERPRETERS, get_interpreter
from idlsec.metrics import topk_iou_curve
from idlsec.models import load_model

DEFENSE_TARGET = "cifar10-resnet56"   # the defense rows' target (else the first of --targets)
CONFIGS = {
    "idlsec": {"preset": "idlsec"},
    "stealth": {"preset": "idlsec", "fitness": "score+map", "map_term": "iou", "map_weight": 2.0,
                "stealth_iou": 0.8, "stealth_search": "prune"},
    "released": {"preset": "released"},
}


def interpreter(name, model):
    if name == "grad" and "grad" not in INTERPRETERS:  # registered by the interpreters issue
        from idlsec.interpreters.grad import Grad

        return Grad(model)
    return get_interpreter(name, model)


class Counter(nn.Module):
    """The victim for Square: counts every evaluated row, charged to the benign image it lies
    within eps of (the nearest one)."""

    def __init__(self, model, x0):
        super().__init__()
        self.model, self.x0 = model, x0.flatten(1)
        self.counts = torch.zeros(len(x0), dtype=torch.long)

    def forward(self, x):
        d = torch.cdist(x.detach().flatten(1), self.x0, p=float("inf"))
        self.counts += torch.bincount(d.argmin(1).cpu(), minlength=len(self.counts))
        return self.model(x)


def summarize(success, queries, iou, transfer=None, to_fool=None):
    ok = [i for i, s in enumerate(success) if s]
    q = [queries[i] for i in ok]
    fool = [v for v in (to_fool or []) if not math.isnan(v)]
    return {
        "q_fool_median": statistics.median(fool) if fool else None,
        "asr": sum(success) / len(success),
        "transfer_asr": (sum(transfer) / len(transfer)) if transfer is not None else None,
        "q_median": statistics.median(q) if q else None,
        "q_mean": statistics.fmean(q) if q else None,
        "asr@100": sum(1 for i in ok if queries[i] <= 100) / len(success),
        "asr@1k": sum(1 for i in ok if queries[i] <= 1000) / len(success),
        "iou": statistics.fmean(iou[i] for i in ok) if ok else None,
    }


def quscore_attack(target, interp, surrogate, x, y, *, targeted, config, budget, args, defense=None):
    """QuScore on a fresh oracle: (x_adv, per-image lists)."""
    oracle = BlackBox(target, interpreter=interp, max_queries=budget, defense=defense)
    params = dict(CONFIGS[config], surrogate_interpreter=interp.name, seed=0, targeted=targeted,
                  max_queries=budget)
    if config == "stealth":
        params["stealth_queries"] = args.stealth_queries
        params["stealth_search"] = args.stealth_search
        params["prune_start"] = args.prune_start
        params["prune_scale"] = args.prune_scale
    atk = QuScore(oracle, surrogates=[surrogate], **params)
    advs, out = [], {"success": [], "queries": [], "transfer": [], "to_fool": []}
    for b in range(0, len(x), args.batch):
        res = atk.run(x[b:b + args.batch], y[b:b + args.batch])
        advs.append(res.x_adv)
        out["success"] += res.success.cpu().tolist()
        out["queries"] += res.queries.cpu().tolist()
        out["transfer"] += res.info["per_sample"]["transfer_success"].cpu().bool().tolist()
        out["to_fool"] += res.info["queries_to_fool"].cpu().tolist()
    return torch.cat(advs), out


def quscore_row(cached, interp, x):
    x_adv, out = cached
    iou = []
    for b in range(0, len(x), 100):
        iou += topk_iou_curve(interp(x_adv[b:b + 100]), interp(x[b:b + 100])).mean(1).cpu().tolist()
    return summarize(out["success"], out["queries"], iou, out["transfer"], out["to_fool"])


def run_quscore(target, interp, surrogate, x, y, **kw):
    return quscore_row(quscore_attack(target, interp, surrogate, x, y, **kw), interp, x)


def square_attack(target, x, y, *, targeted, budget, args):
    """torchattacks.Square: (x_adv, success list, queries list); independent of the interpreter."""
    import torchattacks

    advs, success, queries = [], [], []
    for b in range(0, len(x), args.batch):
        xb, yb = x[b:b + args.batch], y[b:b + args.batch]
        victim = Counter(target, xb).eval()
        atk = torchattacks.Square(victim, norm="Linf", eps=args.eps, n_queries=budget, seed=0)
        if targeted:
            atk.set_mode_targeted_by_label(quiet=True)
        x_adv = atk(xb, yb)
        with torch.no_grad():
            pred = target(x_adv).argmax(1)
        advs.append(x_adv)
        success += (pred == yb if targeted else pred != yb).cpu().tolist()
        queries += victim.counts.tolist()
    return torch.cat(advs), success, queries


def square_row(cached, interp, x):
    x_adv, success, queries = cached
    iou = []
    for b in range(0, len(x), 100):
        iou += topk_iou_curve(interp(x_adv[b:b + 100]), interp(x[b:b + 100])).mean(1).cpu().tolist()
    return summarize(success, queries, iou)


def fmt(v, digits=2):
    if v is None:
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) and not float(v).is_integer() else f"{v:g}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20, help="images per setting (full: 100)")
    p.add_argument("--budget", type=int, default=1000, help="queries per image (full: 10000)")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--targets", default="cifar10-vgg,cifar10-resnet56")
    p.add_argument("--interpreters", default="cam,grad")
    p.add_argument("--modes", default="untargeted,targeted")
    p.add_argument("--configs", default="idlsec,stealth,released")
    p.add_argument("--stealth-queries", type=int, default=1000,
                   help="stealth configuration: queries allowed after the first fooling query")
    p.add_argument("--stealth-search", default="prune", choices=("prune", "ga"),
                   help="stealth configuration: the search after the first fooling query (ga: the GA goes on)")
    p.add_argument("--prune-start", type=int, default=200,
                   help="stealth configuration with prune: GA map-search queries after the first fooling "
                        "query before the pruning starts")
    p.add_argument("--prune-scale", type=float, default=0.0,
                   help="stealth configuration with prune: factor on the perturbation inside a pruned window")
    p.add_argument("--defenses", default="rp,bitdepth,jpeg,median")
    p.add_argument("--no-square", action="store_true")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="start no row after this many minutes (the rows left are listed as not run)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/quscore.md"))
    p.add_argument("--json", default=None, help="also write the raw numbers here (after every row)")
    p.add_argument("--title", default="QuScore (black-box, score oracle) vs Square")
    args = p.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dev = args.device
    surrogate = load_model("cifar10-resnet20", device=dev)
    data = load_dataset("cifar10", "test")
    rows, drows, skipped, started = [], [], [], time.perf_counter()
    targets, square_cache, qs_cache = {}, {}, {}
    for tname in args.targets.split(","):
        target = load_model(tname, device=dev)
        sel = select_images(data, args.n, seed=0, model=target, correct_only=True, device=dev)
        targets[tname] = (target, sel)

    def save():
        write_markdown(args, rows, drows, skipped, time.perf_counter() - started)
        if args.json:
            Path(args.json).write_text(json.dumps({"rows": rows, "defenses": drows, "not_run": skipped}, indent=2))

    def over_time(label):
        if args.max_minutes is not None and time.perf_counter() - started > 60 * args.max_minutes:
            skipped.append(label)
            save()
            return True
        return False

    def one(method, iname, mode, tname):
        if over_time(f"{method} {tname}/{iname}/{mode}"):
            return
        target, sel = targets[tname]
        interp = interpreter(iname, target)
        targeted = mode == "targeted"
        x, y = sel.x.to(dev), (sel.targets if targeted else sel.y).to(dev)
        t = time.perf_counter()
        if method == "square":
            if (tname, mode) not in square_cache:
                square_cache[tname, mode] = square_attack(target, x, y, targeted=targeted, budget=args.budget,
                                                          args=args)
            r = square_row(square_cache[tname, mode], interp, x)
        else:
            # untargeted idlsec never uses an interpreter (no refinement, no maps): one run serves
            # CAM, Grad and the undefended defense row; only the evaluator's IoU differs
            key = (method, tname, mode) if (method, mode) == ("idlsec", "untargeted") else None
            cached = qs_cache.get(key) or quscore_attack(target, interp, surrogate, x, y, targeted=targeted,
                                                          config=method, budget=args.budget, args=args)
            if key is not None:
                qs_cache[key] = cached
            r = quscore_row(cached, interp, x)
        rows.append(dict(target=tname, interp=iname, mode=mode,
                         method=method if method == "square" else f"quscore-{method}",
                         seconds=time.perf_counter() - t, **r))
        print(json.dumps(rows[-1]), flush=True)
        save()

    def defenses():
        if not args.defenses:
            return
        tname = DEFENSE_TARGET if DEFENSE_TARGET in targets else next(iter(targets))
        target, sel = targets[tname]
        interp = interpreter("cam", target)
        for dname in ["none", *args.defenses.split(",")]:
            if over_time(f"defense {dname}"):
                continue
            defense = None if dname == "none" else get_defense(dname, **({"seed": 0} if dname == "rp" else {}))
            t = time.perf_counter()
            x = sel.x.to(dev)
            key = ("idlsec", tname, "untargeted")
            if defense is None and key in qs_cache:
                r = quscore_row(qs_cache[key], interp, x)
            else:
                r = run_quscore(target, interp, surrogate, x, sel.y.to(dev), targeted=False,
                                config="idlsec", budget=args.budget, args=args, defense=defense)
            drows.append(dict(defense=dname, target=tname, seconds=time.perf_counter() - t, **r))
            print(json.dumps(drows[-1]), flush=True)
            save()

    # most important first: the default preset and Square untargeted, the defenses, targeted,
    # the stealth configuration, the released configuration
    configs = args.configs.split(",")
    modes = args.modes.split(",")
    interps = args.interpreters.split(",")
    square = [] if args.no_square else ["square"]
    for mode in modes:
        for method in [m for m in configs if m == "idlsec"] + square:
            for tname in targets:
                for iname in interps:
                    one(method, iname, mode, tname)
        if mode == modes[0]:
            defenses()
    for method in [m for m in configs if m != "idlsec"]:
        for mode in modes:
            for tname in targets:
                for iname in interps:
                    one(method, iname, mode, tname)
    save()


def write_markdown(args, rows, drows, skipped, total):
    dev = args.device
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else (os.uname().machine + " CPU")
    cmd = "python benchmarks/quscore.py " + shlex.join(sys.argv[1:])
    lines = [
        f"## {args.title}",
        "",
        f"Command: `{cmd}`  ",
        (f"Machine: {name}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"total {total / 60:.1f} min.  "),
        f"Setting: surrogate cifar10-resnet20, eps = 8/255, n = {args.n} correctly classified CIFAR-10 test "
        f"images per target (seed 0), budget {args.budget} queries per image"
        + ("" if (args.n, args.budget) == (100, 10000) else " (reduced from 100 images / 10,000 queries "
           "for the CPU; the full run is benchmarks/gpu/bench/quscore.sh)") + ".  ",
        ("Queries: every image the victim evaluates (QuScore: the oracle's exact per-image count, "
        "including the benign-map query of the stealth configuration; Square: every row its model "
        "evaluates, including its initial clean check). q median/mean over successful images; for the "
        "stealth configuration they include the search for a benign-looking map after the first "
        "fooling query, whose count is 'q to fool' (median over images ever fooled). "
        "IoU: mean top-k IoU (k = 5%..50%) of the target interpreter's map of the returned example "
        "with its benign map, over successful images. transfer = stage-A population fools the target "
        "in the first (population) query. s: wall seconds of the row; the untargeted idlsec run is shared by "
        "CAM, Grad and the undefended defense row, and Square's by CAM and Grad (the later rows show the "
        "evaluation time only)."),
        "",
        ("| target | interp | mode | method | ASR | transfer | q median | q mean | q to fool (median) | ASR@100 | "
        "ASR@1k | IoU | s |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"quscore-idlsec": 0, "quscore-stealth": 1, "square": 2, "quscore-released": 3}
    shown = sorted(rows, key=lambda r: (r["interp"], r["mode"] != "untargeted", r["target"], order.get(r["method"], 3)))
    for r in shown:
        lines.append(f"| {r['target']} | {r['interp']} | {r['mode']} | {r['method']} | {fmt(r['asr'])} | "
                     f"{fmt(r['transfer_asr'])} | {fmt(r['q_median'], 0)} | {fmt(r['q_mean'], 1)} | "
                     f"{fmt(r.get('q_fool_median'), 0)} | {fmt(r['asr@100'])} | {fmt(r['asr@1k'])} | {fmt(r['iou'])} | {r['seconds']:.0f} |")
    # ratio of median queries: Square / QuScore-idlsec, where QuScore's ASR >= Square's
    ratios = []
    for r in rows:
        if r["method"] != "square":
            continue
        for q in rows:
            same = (q["method"] == "quscore-idlsec" and q["target"] == r["target"]
                    and q["interp"] == r["interp"] and q["mode"] == r["mode"])
            if same and q["q_median"] and r["q_median"]:
                ratios.append(f"{r['target']}/{r['interp']}/{r['mode']}: {r['q_median'] / q['q_median']:.1f}x"
                              + ("" if q["asr"] >= r["asr"] else " (QuScore ASR lower)"))
    if ratios:
        lines += ["", "Square median queries / QuScore-idlsec median queries: " + "; ".join(ratios) + "."]
    if drows:
        lines += ["", (f"Input-transform defenses inside the oracle (QuScore idlsec, resnet20 -> "
                       f"{drows[0].get('target', DEFENSE_TARGET).removeprefix('cifar10-')}, "
                  "CAM, untargeted):"), "",
                  "| defense | ASR | transfer | q median | q mean | IoU |", "|---|---|---|---|---|---|"]
        for r in drows:
            lines.append(f"| {r['defense']} | {fmt(r['asr'])} | {fmt(r['transfer_asr'])} | "
                         f"{fmt(r['q_median'], 0)} | {fmt(r['q_mean'], 1)} | {fmt(r['iou'])} |")
    if skipped:
        lines += ["", f"Not run (time cap of {args.max_minutes:g} min): " + "; ".join(skipped) + "."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(lines) + "\n"
    marker = "<!-- measured results above; analysis below is kept on regeneration -->"
    if out.is_file() and marker in out.read_text():
        body += "\n" + marker + out.read_text().split(marker, 1)[1]
    out.write_text(body)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
