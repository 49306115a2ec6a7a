"""Why QuScore's map stealth misses IoU >= 0.70 cross-family and on Grad (issue #16 item 5):
two measurements on the validation split, no queries involved (white-box access to the victims
here is the analyst's, not the attacker's).

1. *Class floor*: the victim's map of the benign image for another class against its map for the
   true class (mean top-k IoU, k = 5%..50%): the runner-up class, and the best of the nine others.
   An untargeted example is shown with the map of the class it reaches; with the features left
   as they are, this is the IoU it would get.
2. *Map-preserving start*: ADV^2 (PGD framework, 50 + 150 steps, the benign map as target map) on
   the surrogate cifar10-resnet20 with the victim's interpreter, targeted at the surrogate's
   runner-up class: does the example fool the victim, and does its map stay (the exact example,
   and its ±eps vertex, which is what QuScore's sign genome decodes to)?

    python benchmarks/quscore_map_probe.py --n 40 --n-start 12 --out benchmarks/results/quscore-map-probe.md
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from idlsec.attacks import ADV2
from idlsec.attacks.quscore import _mean_topk_iou as iou
from idlsec.data import load_dataset
from idlsec.interpreters import get_interpreter
from idlsec.models import load_model

VICTIMS = ("cifar10-resnet56", "cifar10-vgg")
INTERPS = ("cam", "grad")


def class_floor(x, y):
    rows = []
    for name in VICTIMS:
        m = load_model(name).eval()
        with torch.no_grad():
            logits = m(x)
        ok = logits.argmax(1) == y
        xs, ys = x[ok], y[ok]
        runner = logits[ok].scatter(1, ys[:, None], float("-inf")).argmax(1)
        for it in INTERPS:
            interp = get_interpreter(it, m)
            own = interp(xs, ys).detach()
            per_class = torch.stack([iou(own, interp(xs, torch.full_like(ys, c)).detach()) for c in range(10)], 1)
            best = per_class.scatter(1, ys[:, None], -1.0).max(1).values
            rows.append(f"| {name} | {it} | {len(ys)} | {iou(own, interp(xs, runner).detach()).mean():.2f} | "
                        f"{best.mean():.2f} | {(best >= 0.7).float().mean():.2f} |")
    return rows


def map_start(x, y):
    s = load_model("cifar10-resnet20").eval()
    with torch.no_grad():
        logits = s(x)
    ok = logits.argmax(1) == y
    x, y = x[ok], y[ok]
    t = logits[ok].scatter(1, y[:, None], float("-inf")).argmax(1)
    rows = []
    for it in INTERPS:
        xa = ADV2(s, get_interpreter(it, s), warmup_steps=50, steps=150, seed=0)(x, t)
        vert = (x + 8 / 255 * torch.sign(xa - x)).clamp(0, 1)
        for name in ("cifar10-resnet20", *VICTIMS):
            v = load_model(name).eval()
            interp = get_interpreter(it, v)
            with torch.no_grad():
                p0, pa, pv = v(x).argmax(1), v(xa).argmax(1), v(vert).argmax(1)
            benign = interp(x, p0).detach()
            fa, fv = (pa != p0) & (p0 == y), (pv != p0) & (p0 == y)
            ia, iv = iou(interp(xa, pa).detach(), benign), iou(interp(vert, pv).detach(), benign)

            def over(v_, f_):
                return f"{v_[f_].mean():.2f}" if bool(f_.any()) else "–"

            rows.append(f"| {it} | {name} | {len(x)} | {fa.float().mean():.2f} | {over(ia, fa)} | "
                        f"{ia.mean():.2f} | {fv.float().mean():.2f} | {over(iv, fv)} |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="validation images for the class floor (first n)")
    ap.add_argument("--n-start", type=int, default=12, help="first validation images for the map-preserving start")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.n < 1 or a.n_start < 1:
        raise SystemExit("error: --n and --n-start must be >= 1")
    torch.manual_seed(0)
    ds = load_dataset("cifar10", "val")
    x, y = ds.images[: a.n].float() / 255, ds.labels[: a.n]
    t0 = time.process_time()
    floor = class_floor(x, y)
    start = map_start(ds.images[: a.n_start].float() / 255, ds.labels[: a.n_start])
    cpu = time.process_time() - t0
    text = "\n".join([
        "## QuScore map stealth: the class floor and a map-preserving start (split val)", "",
        f"Command: `python benchmarks/quscore_map_probe.py --n {a.n} --n-start {a.n_start}"
        + (f" --out {a.out}" if a.out else "") + "`  ",
        f"Machine: {platform.machine()} CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
        f"total {cpu / 60:.1f} CPU-min (shared machine).  ", "",
        f"**Class floor** (first {a.n} validation images, those the victim classifies correctly): mean "
        "top-k IoU of the victim's map of the benign image for another class with its map for the "
        "true class; share of images where some other class reaches 0.70.", "",
        "| victim | interpreter | n | runner-up class | best other class | share best >= 0.70 |",
        "|---|---|---|---|---|---|", *floor, "",
        "**Map-preserving start** (ADV^2, PGD, 50 + 150 steps, eps 8/255, on cifar10-resnet20 with the "
        f"same interpreter, targeted at its runner-up class; of the first {a.n_start} validation images, "
        "those the surrogate classifies correctly): share of images fooling each model and the model's "
        "map IoU for the example (over fooled / all images), for the exact example and for its ±eps "
        "vertex (what QuScore's sign genome decodes to).", "",
        "| interpreter | model | n | fooled (exact) | IoU fooled (exact) | IoU all (exact) | fooled (vertex) | "
        "IoU fooled (vertex) |", "|---|---|---|---|---|---|---|---|", *start, ""])
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
