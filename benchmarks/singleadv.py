"""SingleADV benchmark: universal (source → target) perturbations on CIFAR-10.

Fits on training-split images of the source class (and other-class training images for the
inhibition term), measures on the test images of the source class (fooling rate, target
confidence, map fidelity: the map the system shows for its adversarial prediction vs the benign
map) and on other-class test images (unintended fooling: the predicted label changes). Also the
trade-off curve over the inhibition weight, an L2 budget, and transfer to cifar10-resnet56 and to
Grad-CAM. Writes benchmarks/results/singleadv.md (or --out).

    python benchmarks/singleadv.py                  # reduced CPU size (see --help)
    python benchmarks/singleadv.py --full --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from idlsec.attacks.singleadv import SingleADV
from idlsec.bench.universal import class_images, evaluate_delta, other_images
from idlsec.data import load_dataset
from idlsec.interpreters import get_interpreter
from idlsec.models import load_model

PAIRS = [(3, 9), (0, 8), (5, 3), (7, 4), (1, 9), (6, 2)]  # cat→truck, airplane→ship, dog→cat, horse→deer, ...


def parse_pairs(text):
    return [tuple(int(v) for v in p.split(":")) for p in text.split(",")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full", action="store_true", help="the full sizes (GPU)")
    ap.add_argument("--pairs", type=parse_pairs, default=None, help="e.g. 3:9,0:8 (default: 5 CPU / 6 full)")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--n-inhibition", type=int, default=None)
    ap.add_argument("--n-test-other", type=int, default=None)
    ap.add_argument("--weights", default=None, help="inhibition weights of the trade-off curve, e.g. 0,0.5,1,2")
    ap.add_argument("--l2-eps", type=float, default=1.0, help="the L2 budget in [0,1] units")
    ap.add_argument("--l2-pairs", type=int, default=None, help="how many pairs also get the L2 budget")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/singleadv.md")
    ap.add_argument("--json", default=None, help="also write every measured row (and the sizes) as JSON here")
    ap.add_argument("--parts", default=None, help="which parts to run: main,l2,curve,adaptive (default: all)")
    ap.add_argument("--polish-steps", type=int, default=200, help="polish_steps of the 'adaptive' part")
    ap.add_argument("--adapt-inhibition", type=float, default=0.2, help="adapt_inhibition of the 'adaptive' part")
    ap.add_argument("--from-json", default=None,
                    help="comma-separated JSON files of earlier (partial) runs: only write the markdown")
    args = ap.parse_args(argv)
    if args.from_json:
        rows, sizes = [], None
        for f in args.from_json.split(","):
            d = json.loads(Path(f).read_text())
            rows += d["rows"]
            sizes = sizes or d["sizes"]
        parts = [json.loads(Path(f).read_text())["sizes"] for f in args.from_json.split(",")]
        sizes["total"] = sum(p["total"] for p in parts)
        sizes["pairs"] = list(dict.fromkeys(tuple(pair) for p in parts for pair in p["pairs"]))
        sizes["command"] = " ; ".join(p["command"] for p in parts)
        write_markdown(Path(args.out), rows, args, sizes)
        return
    parts = set((args.parts or "main,l2,curve,adaptive").split(","))
    torch.set_num_threads(args.threads)
    full = args.full
    pairs = args.pairs or (PAIRS if full else PAIRS[:5])
    iterations = args.iterations or (1000 if full else 200)
    n_train = args.n_train or (2000 if full else 1000)
    n_inh = args.n_inhibition if args.n_inhibition is not None else (4000 if full else 2000)
    n_test_other = args.n_test_other or (9000 if full else 1000)
    weights = ([float(w) for w in args.weights.split(",")] if args.weights
               else ([0.0, 0.25, 0.5, 1.0, 2.0, 4.0] if full else [0.0, 0.5, 2.0]))
    eval_every = 10 if full else 25
    l2_pairs = args.l2_pairs if args.l2_pairs is not None else 2
    dev = args.device

    t0 = time.perf_counter()
    train, test = load_dataset("cifar10", "train"), load_dataset("cifar10", "test")
    model = load_model("cifar10-resnet20", device=dev)
    cam = get_interpreter("cam", model)
    m56 = load_model("cifar10-resnet56", device=dev)
    cam56 = get_interpreter("cam", m56)
    gradcam = get_interpreter("gradcam", model)
    classes = train.classes
    rows = []

    def fit(src, tgt, **kw):
        xs = class_images(train, src, n_train, 0).to(dev)
        xo = other_images(train, src, n_inh, 0)[0].to(dev) if n_inh else None
        kw.setdefault("iterations", iterations)
        atk = SingleADV(model, cam, source=src, target=tgt, eval_every=10 if "adapt_inhibition" in kw else eval_every,
                        **kw)
        delta = atk.fit(xs, others=xo if kw.get("inhibition", 1.0) > 0 else None)
        return atk, delta

    def measure(src, tgt, atk, delta, label, transfer=False):
        xt = class_images(test, src, None, 0).to(dev)
        xot = other_images(test, src, n_test_other, 0)[0].to(dev)
        row = {"pair": f"{classes[src]}→{classes[tgt]}", "config": label, "norm": atk.norm,
               "polish_steps": atk.polish_steps, "adapt_inhibition": atk.adapt_inhibition,
               "eps": atk.budget(tuple(delta.shape)), "inhibition": atk.inhibition,
               "fooling_train": atk.fooling_rate, "iterations": atk.history[-1]["iteration"],
               "seconds": atk.seconds, "converged": atk.converged,
               **evaluate_delta(model, cam, delta, target=tgt, source_images=xt, other_images=xot)}
        if transfer:
            row["to_resnet56"] = evaluate_delta(m56, cam56, delta, target=tgt, source_images=xt, other_images=xot)
            row["to_gradcam"] = evaluate_delta(model, gradcam, delta, target=tgt, source_images=xt)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)
        return row

    # 1. main table: every pair, L∞ 8/255, default inhibition; with transfer
    for src, tgt in pairs if "main" in parts else []:
        atk, delta = fit(src, tgt, norm="linf", eps=8 / 255)
        measure(src, tgt, atk, delta, "linf", transfer=True)
    # 2. the L2 budget
    for src, tgt in pairs[:l2_pairs] if "l2" in parts else []:
        atk, delta = fit(src, tgt, norm="l2", eps=args.l2_eps)
        measure(src, tgt, atk, delta, "l2")
    # 2b. the main pairs again with the adaptive inhibition weight, polished after the target is met
    for src, tgt in pairs if "adaptive" in parts else []:
        atk, delta = fit(src, tgt, norm="linf", eps=8 / 255, polish_steps=args.polish_steps,
                         adapt_inhibition=args.adapt_inhibition, iterations=max(iterations, 2 * args.polish_steps))
        measure(src, tgt, atk, delta, "adaptive")
    # 3. trade-off curve on the first pair (the default weight is already in table 1)
    src, tgt = pairs[0]
    default_w = SingleADV(model, cam, source=src, target=tgt).inhibition
    for w in weights if "curve" in parts else []:
        if w == default_w:
            continue
        atk, delta = fit(src, tgt, norm="linf", eps=8 / 255, inhibition=w)
        measure(src, tgt, atk, delta, f"w={w}")
    sizes = {"pairs": pairs, "iterations": iterations, "n_train": n_train, "n_inh": n_inh,
             "n_test_other": n_test_other, "eval_every": eval_every, "weights": weights, "default_w": default_w, "l2_pairs": l2_pairs,
             "full": full, "threads": torch.get_num_threads(), "total": time.perf_counter() - t0, "command": _command(args)}
    write_markdown(Path(args.out), rows, args, sizes)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "sizes": sizes}, indent=1))


def _f(v, nd=2):
    return "–" if v is None or math.isnan(v) else f"{v:.{nd}f}"


def _cpu_name():
    from idlsec.runtime import cpu_name

    return cpu_name()


def _command(args):
    return f"OMP_NUM_THREADS={args.threads} python " + " ".join([sys.argv[0].split("/work/main/")[-1], *sys.argv[1:]])


def write_markdown(path: Path, rows, args, s):
    dev = args.device
    gpu = torch.cuda.get_device_name(0) if dev.startswith("cuda") and torch.cuda.is_available() else None
    cmd = f"`{s.get('command', _command(args))}`"
    if args.from_json:
        cmd += f" (partial runs in parallel processes, merged with `{_command(args)}`)"
    lines = [
        "## SingleADV: universal source→target perturbations (CIFAR-10, cifar10-resnet20 + CAM)",
        "",
        f"Command: {cmd}  ",
        (f"Machine: {gpu or _cpu_name()} ({'GPU' if gpu else 'CPU'}), "
        f"torch {torch.__version__}, {s.get('threads', args.threads)} thread(s); total {s['total'] / 60:.1f} min (summed over processes).  "),
        (f"Size: {'full' if s['full'] else 'REDUCED for the shared 2-core CPU'}: {len(s['pairs'])} pairs, "
        f"at most {s['iterations']} iterations (stop at a training fooling rate of 0.8, checked every {s.get('eval_every', 10)}), fit on {s['n_train']} "
        f"training images of the source class + {s['n_inh']} other-class training images (inhibition), "
        f"measured on all 1,000 test images of the source class and {s['n_test_other']} other-class test "
        f"images. Defaults otherwise (margin losses, κ = 10, λ = 5, inhibition weight "
        f"{s['default_w']}, joint schedule, batch 64 + 64, Adam-normalised step of 1/255)."),
        "",
        ("Columns: *fool* = share of held-out source images classified as the target; *conf* = mean "
        "p(target) on them; *unint.* = share of other-class test images whose predicted label changes "
        "(→t: changes to the target); *IoU* = top-k IoU (k = 5..50%) of the map the system shows for its "
        "adversarial prediction vs the benign map, mean over the held-out source images (IoU_f: over "
        "the fooled ones only); *L1* = map L1 distance (8×8 maps); *s* = wall seconds per fit"
         + ("." if gpu else " on a CPU shared with other jobs (load 6-12 on 2 cores): several times the "
            "unloaded time.")),
        "",
        "| pair | budget | w | fool (train) | fool (test) | conf | unint. | →t | IoU | IoU_f | L1 | iters | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        budget = f"L∞ {r['eps'] * 255:.0f}/255" if r["norm"] == "linf" else f"L2 {r['eps']:.2f}"
        if r["config"] == "adaptive":
            budget += ", adaptive w"
        lines.append(
            f"| {r['pair']} | {budget} | {r['inhibition']} | {_f(r['fooling_train'])} | {_f(r['fooling_rate'])} | "
            f"{_f(r['target_confidence_mean'])} | {_f(r.get('unintended_fooling_rate'))} | "
            f"{_f(r.get('unintended_to_target_rate'))} | {_f(r['iou_topk_mean'])} | "
            f"{_f(r['iou_topk_fooled_mean'])} | {_f(r['map_l1_mean'], 1)} | {r['iterations']} | {r['seconds']:.0f} |")
    main = [r for r in rows if r["config"] == "linf"]
    if main:
        mean = lambda k: sum(r[k] for r in main) / len(main)
        lines += ["", (f"Mean over the {len(main)} pairs at L∞ 8/255: held-out fooling {mean('fooling_rate'):.2f}, "
                  f"unintended fooling {mean('unintended_fooling_rate'):.2f}, IoU {mean('iou_topk_mean'):.2f} "
                  f"(fooled only {mean('iou_topk_fooled_mean'):.2f}), confidence "
                  f"{mean('target_confidence_mean'):.2f}, {mean('seconds'):.0f} s per fit. Targets: fooling ≥ 0.74 "
                  f"with unintended ≤ 0.30 and IoU ≥ 0.45.")]
    curve = sorted([r for r in rows if r["norm"] == "linf" and r["config"] != "adaptive" and r["pair"] == rows[0]["pair"]],
                   key=lambda r: r["inhibition"])
    if len(curve) > 1:
        lines += ["", f"Trade-off on {rows[0]['pair']} (L∞ 8/255) as the inhibition weight w varies:", "",
                  "| w | held-out fooling | unintended fooling | IoU |", "|---|---|---|---|"]
        lines += [f"| {r['inhibition']} | {_f(r['fooling_rate'])} | {_f(r['unintended_fooling_rate'])} | "
                  f"{_f(r['iou_topk_mean'])} |" for r in curve]
    pol = [r for r in rows if r["config"] == "adaptive"]
    if pol:
        pm = lambda k: sum(r[k] for r in pol) / len(pol)  # noqa: E731
        lines += ["", (f"Adaptive inhibition (`adapt_inhibition={pol[0]['adapt_inhibition']}`: the weight grows "
                       f"×{1 + pol[0]['adapt_inhibition']:g} at each check, every 10 iterations, while the training "
                       f"fooling rate meets 0.8 and shrinks otherwise; `polish_steps={pol[0]['polish_steps']}`: after "
                       f"the target is first met, up to that many more iterations, keeping the δ that meets it with "
                       f"the fewest label changes on the training other-class images; at most "
                       f"{max(s['iterations'], 2 * pol[0]['polish_steps'])} iterations), mean over {len(pol)} pairs: "
                       f"held-out fooling {pm('fooling_rate'):.2f}, unintended {pm('unintended_fooling_rate'):.2f}, "
                       f"IoU {pm('iou_topk_mean'):.2f}, confidence {pm('target_confidence_mean'):.2f}, "
                       f"{pm('seconds'):.0f} s per fit.")]
    tr = [r for r in rows if "to_resnet56" in r]
    if tr:
        lines += ["", ("Black-box transfer of the L∞ perturbations fitted on resnet20 + CAM: applied unchanged "
                  "to cifar10-resnet56 (its own CAM), and to resnet20 explained by Grad-CAM (same predictions, "
                  "so only the map fidelity changes)."), "",
                  ("| pair | fool resnet20 | fool resnet56 | unint. resnet56 | IoU resnet56 (CAM) | "
                  "IoU resnet20 Grad-CAM | IoU_f Grad-CAM |"), "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['pair']} | {_f(r['fooling_rate'])} | {_f(r['to_resnet56']['fooling_rate'])} | "
                  f"{_f(r['to_resnet56']['unintended_fooling_rate'])} | {_f(r['to_resnet56']['iou_topk_mean'])} | "
                  f"{_f(r['to_gradcam']['iou_topk_mean'])} | {_f(r['to_gradcam']['iou_topk_fooled_mean'])} |"
                  for r in tr]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("IDLSEC_MIRROR", "/work/shared")
    main()
