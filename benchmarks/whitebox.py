"""White-box attack timing: the cost of one attack step and our PGD against torchattacks.PGD.
Writes benchmarks/results/whitebox.md (with the rows of benchmarks/results/whitebox.jsonl).

The attack figures themselves come from suites run by ``idlsec bench``: the reference
configuration is benchmarks/whitebox.yaml, the papers' grid benchmarks/paper.yaml (this script's
former ``reference`` and ``full`` parts). Earlier reference/full rows kept in the JSONL are still
shown.

Parts (``--parts``, comma-separated; default both):
  cost          seconds per attack step / one bare forward+backward at the same batch (Grad: / one
                bare double backward through the smooth-ReLU surrogate).
  torchattacks  our PGD vs torchattacks.PGD, identical settings and images: time ratio and ASR.

Every result row is appended to --jsonl as soon as it is measured (so a killed run keeps what it
finished) and the markdown is rebuilt from the JSONL of all parts (``--report-only`` rebuilds it).

    OMP_NUM_THREADS=1 IDLSEC_MIRROR=../shared .venv/bin/python benchmarks/whitebox.py
    IDLSEC_MIRROR=... .venv/bin/python benchmarks/whitebox.py --device cuda --cost-batch 100
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import torch

from idlsec.attacks import PGD, make_attack
from idlsec.data import load_dataset, select_images
from idlsec.errors import ResourceError
from idlsec.interpreters import get_interpreter
from idlsec.models import load_model
from idlsec.models.smooth_relu import smooth_relu
from idlsec.runtime import cpu_name, sync

ROOT = Path(__file__).resolve().parent
REFERENCE = {  # the minimal implementation, CAM, cifar10-resnet20, 32 images, 100 + 400 steps
    "pgd": {"asr": 1.00, "iou": 0.39, "l1": 12.1},
    "adv2": {"asr": 1.00, "iou": 0.84, "l1": 2.5},
    "advedge": {"asr": 1.00, "iou": 0.90, "l1": 1.5, "edge": 0.64},
    "advedge+": {"asr": 1.00, "iou": 0.72, "edge": 1.00},
}


def make_interp(name, model, rts_note: dict):
    if name != "rts":
        return get_interpreter(name, model)
    try:
        return get_interpreter("rts", model)
    except ResourceError as err:  # no packaged masking model: time/attack an untrained one, say so
        rts_note[model.card.name] = f"untrained masking model ({type(err).__name__})"
        return get_interpreter("rts", model, weights="random")


CONTEXT: dict = {}  # machine and command, stamped on every row


def emit(row, path):
    row = {**row, **CONTEXT}
    print(json.dumps(row), flush=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def _provenance(rows):
    """Markdown lines naming the command(s) and machine(s) that produced ``rows``."""
    cmds = "; ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", "?") for r in rows))
    machines = "; ".join(dict.fromkeys(r.get("machine", "?") for r in rows))
    return [f"Command(s): {cmds}. Machine: {machines}.", ""]


def _per_step(runs: dict, steps, device, reps) -> dict:
    """Seconds of one step for each ``runs[name](k, tick)`` (which calls ``tick()`` after every
    step): the fastest single step over ``reps`` rounds, the runs interleaved within each round so
    that all see the same machine load. The minimum is robust to other load (which only adds
    time) and removes per-run fixed costs."""
    # on the CPU the process's own CPU time (one thread): the other jobs sharing the cores only
    # delay it; on the GPU wall-clock time after a synchronisation
    clock = time.perf_counter if str(device).startswith("cuda") else time.process_time
    stamps: dict[str, list[list[float]]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():
            stamps[name].append([])

            def tick(*_, cur=stamps[name][-1]):
                sync(device)
                cur.append(clock())

            run(steps, tick)
    return {name: min(b - a for st in per for a, b in itertools.pairwise(st)) for name, per in stamps.items()}


def part_cost(args, device):
    for model_name in args.cost_models:
        _cost(args, device, model_name)


def _cost(args, device, model_name):
    rts_note: dict = {}
    model = load_model(model_name, device=device)
    sel = select_images(load_dataset("cifar10", "test"), args.cost_batch, seed=0, model=model,
                        correct_only=True, device=device)
    x, t = sel.x.to(device), sel.targets.to(device)
    ce = torch.nn.functional.cross_entropy

    def bare(k, tick, double=False):
        for _ in range(k):
            xg = x.clone().requires_grad_(True)
            if double:
                with smooth_relu():
                    (g,) = torch.autograd.grad(ce(model(xg), t), xg, create_graph=True)
                    torch.autograd.grad(g.abs().sum(), xg)
            else:
                torch.autograd.grad(ce(model(xg), t), xg)
            tick()

    def attack(name, interp, benign):
        def run(k, tick):
            if name == "pgd":
                atk = PGD(model, steps=k, alpha=1 / 255, random_start=False, targeted=True, callback=tick)
            else:
                atk = make_attack(name, model, interp, targeted=True, warmup_steps=0, steps=k, callback=tick)
            atk._run(x, t, benign)
        return run

    runs = {"bare": bare, "double": lambda n, tick: bare(n, tick, True), "pgd": attack("pgd", None, None)}
    for name in ("cam", "gradcam", "rts", "grad"):
        interp = make_interp(name, model, rts_note)
        runs[name] = attack("adv2", interp, interp(x))
    best = _per_step(runs, args.cost_steps, device, args.reps)
    for name in ("pgd", "cam", "gradcam", "rts", "grad"):
        ref = best["double" if name == "grad" else "bare"]
        emit({"part": "cost", "model": model_name, "attack": "pgd" if name == "pgd" else "adv2",
              "interpreter": "-" if name == "pgd" else name, "batch": len(x), "step_s": best[name],
              "bare_s": ref, "ratio": best[name] / ref,
              "baseline": "double backward" if name == "grad" else "forward+backward",
              "note": rts_note.get(model_name, "") if name == "rts" else ""}, args.jsonl)


def part_torchattacks(args, device):
    import torchattacks

    model = load_model("cifar10-resnet20", device=device)
    sel = select_images(load_dataset("cifar10", "test"), args.ta_n, seed=0, model=model, correct_only=True,
                        device=device)
    x, t = sel.x.to(device), sel.targets.to(device)
    settings = {"eps": 8 / 255, "alpha": 2 / 255, "steps": args.ta_steps, "random_start": False}
    ours = PGD(model, targeted=True, **settings)
    theirs = torchattacks.PGD(model, **settings)
    theirs.set_mode_targeted_by_label(quiet=True)
    clock = time.perf_counter if str(device).startswith("cuda") else time.process_time  # see _per_step
    times = {"ours": [], "torchattacks": []}
    outs = {}
    for _ in range(args.reps):
        for name, fn in (("ours", lambda: ours(x, t)), ("torchattacks", lambda: theirs(x, t))):
            sync(device)
            t0 = clock()
            outs[name] = fn()
            sync(device)
            times[name].append(clock() - t0)
    with torch.no_grad():
        asr = {k: float((model(v).argmax(1) == t).float().mean()) for k, v in outs.items()}
    emit({"part": "torchattacks", "n": len(x), **settings, "ours_s": min(times["ours"]),
          "torchattacks_s": min(times["torchattacks"]), "ratio": min(times["ours"]) / min(times["torchattacks"]),
          "asr_ours": asr["ours"], "asr_torchattacks": asr["torchattacks"],
          "max_abs_diff": float((outs["ours"] - outs["torchattacks"]).abs().max())}, args.jsonl)


# --- report ------------------------------------------------------------------------------------
def _fmt(v, nd=3):
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _device(row) -> str:
    return row.get("machine", "(device ?)").rsplit("(device ", 1)[-1].rstrip(")")


def _machine(device):
    gpu = str(device).startswith("cuda") and torch.cuda.is_available()
    hw = torch.cuda.get_device_name() if gpu else cpu_name()
    return f"{hw}; torch {torch.__version__}; {torch.get_num_threads()} thread(s)"


def report(args):
    rows = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line.strip()] \
        if Path(args.jsonl).exists() else []
    out = ["## White-box attacks: PGD, ADV^2, AdvEdge, AdvEdge+", "",
           ("Produced by `benchmarks/whitebox.py` (GPU: `bash benchmarks/gpu/whitebox.sh`); every section "
            "names the command and machine of its rows."), ""]
    ref = [r for r in rows if r["part"] == "reference"]
    if ref:
        out += ["### Reference configuration (issue 4)", "", *_provenance(ref),
                ("CAM on cifar10-resnet20, 32 correctly classified CIFAR-10 test images (seed 0, random "
                 "targets), eps 8/255, alpha 1/255, 100 warm-up + 400 joint steps (PGD: 500 steps, no random "
                 "start). IoU: top-k IoU with the benign map averaged over k = 5%..50%; L1: map distance "
                 "(8x8 min-max maps); edge: share of the perturbation energy on Sobel edges > 0.1. "
                 "`ref` columns: the issue's reference points."), "",
                ("| attack | edge_stages | ASR | IoU | ref IoU | map L1 | ref L1 | pert. L2 | edge energy | ref edge "
                 "| SSIM | s/image |"), "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in ref:
            rp = REFERENCE.get(r["attack"], {}) if r["variant"] in ("", "both") else {}
            out.append(f"| {r['attack']} | {r['variant'] or '–'} | {r['asr']:.2f} | {r['iou']:.3f} | "
                       f"{_fmt(rp.get('iou'), 2)} | {r['l1']:.2f} | {_fmt(rp.get('l1'), 1)} | {r['l2']:.3f} | "
                       f"{r['edge']:.2f} | {_fmt(rp.get('edge'), 2)} | {r['ssim']:.3f} | {r['s_per_image']:.2f} |")
        out.append("")
    for part, title, text in (
            ("full", "Full benchmark (papers' schedules)",
             ("ADV^2/AdvEdge(+): 300 warm-up + 1000 joint steps (Grad: 300 + 704, staircase c); PGD: 300 steps "
             "(the warm start alone). MASK: fewer images and a shortened schedule (steps column).")),
            ("small", "Reduced run on the CPU (few images, shortened schedules)",
             ("A size the shared CPU finishes in minutes: see the n and steps columns (PGD: as many steps as "
             "the warm start). Indicative only; the full benchmark is the GPU section."))):
        full = [r for r in rows if r["part"] == part]
        if not full:
            continue
        out += [f"### {title}", "", *_provenance(full),
                ("Correctly classified CIFAR-10 test images (seed 0, random targets), eps 8/255, alpha 1/255. "
                 + text + " RTS's edge threshold is 0.05, elsewhere 0.1."), "",
                ("| model | interpreter | attack | edge_stages | n | steps | ASR | IoU | map L1 | pert. L2 | "
                 "edge energy | SSIM | s/image | note |"), "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in full:
            out.append(f"| {r['model']} | {r['interpreter']} | {r['attack']} | {r['variant'] or '–'} | {r['n']} | "
                       f"{r['steps']} | {r['asr']:.2f} | {r['iou']:.3f} | {r['l1']:.2f} | {r['l2']:.3f} | "
                       f"{r['edge']:.2f} | {r['ssim']:.3f} | {r['s_per_image']:.3f} | {r.get('note', '')} |")
        out.append("")
    cost = [r for r in rows if r["part"] == "cost"]
    if cost:
        out += ["### Cost of one attack step", "", *_provenance(cost),
                ("The fastest single joint-stage step of ADV^2 (default settings: best-example bookkeeping on; "
                 "Grad's true-map check every 10th step is not in the minimum) divided by the fastest bare "
                 "forward+backward to the input at the same batch (Grad: a bare double backward through the "
                 "smooth-ReLU surrogate); minima over all steps of the repeats, the runs interleaved. CPU: "
                 "process CPU time with one thread (the shared machine's load only delays it); GPU: "
                 "wall-clock after synchronisation. Target: <= 1.2 for PGD/CAM/Grad-CAM and Grad."), "",
                "| device | model | batch | attack | interpreter | step (ms) | baseline | baseline (ms) | ratio | note |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in cost:
            out.append(f"| {_device(r)} | {r['model']} | {r['batch']} | {r['attack']} | {r['interpreter']} | {1e3 * r['step_s']:.2f} | "
                       f"{r['baseline']} | {1e3 * r['bare_s']:.2f} | {r['ratio']:.2f} | {r.get('note', '')} |")
        out.append("")
    ta = [r for r in rows if r["part"] == "torchattacks"]
    if ta:
        out += ["### Our PGD vs torchattacks.PGD", "", *_provenance(ta),
                ("Targeted, identical settings and images (cifar10-resnet20), best of the interleaved repeats, "
                 "whole call (validation included; CPU: process CPU time, GPU: wall-clock). Target: time "
                 "ratio <= 1.0 with equal ASR."), "",
                ("| device | n | eps | alpha | steps | ours (s) | torchattacks (s) | ratio | ASR ours | "
                 "ASR torchattacks | max abs diff |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in ta:
            out.append(f"| {_device(r)} | {r['n']} | 8/255 | 2/255 | {r['steps']} | {r['ours_s']:.3f} | {r['torchattacks_s']:.3f} | "
                       f"{r['ratio']:.2f} | {r['asr_ours']:.2f} | {r['asr_torchattacks']:.2f} | "
                       f"{r['max_abs_diff']:.2e} |")
        out.append("")
    if args.notes and Path(args.notes).exists():
        out += [Path(args.notes).read_text().strip(), ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(out))
    print(f"wrote {args.out}")


def main():
    import sys

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--parts", default="cost,torchattacks")
    p.add_argument("--out", default=str(ROOT / "results" / "whitebox.md"))
    p.add_argument("--jsonl", default=str(ROOT / "results" / "whitebox.jsonl"))
    p.add_argument("--notes", default=str(ROOT / "results" / "whitebox_notes.md"),
                   help="a markdown file appended to the section (discussion of the numbers)")
    p.add_argument("--fresh", action="store_true", help="start a new JSONL instead of appending")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--command", default=None, help="the command stamped on the rows (default: this one)")
    p.add_argument("--cost-models", default="cifar10-resnet20")
    p.add_argument("--cost-batch", type=int, default=32)
    p.add_argument("--cost-steps", type=int, default=12, help="steps per timed run (the fastest step counts)")
    p.add_argument("--ta-n", type=int, default=32)
    p.add_argument("--ta-steps", type=int, default=50)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = p.parse_args()
    args.cost_models = args.cost_models.split(",")
    torch.set_num_threads(args.threads)
    if args.fresh and Path(args.jsonl).exists():
        Path(args.jsonl).unlink()
    device = torch.device(args.device)
    command = args.command or "python benchmarks/whitebox.py " + " ".join(sys.argv[1:])
    CONTEXT.update(machine=f"{_machine(device)} (device {device})", command=command)
    if not args.report_only:
        parts = {"cost": part_cost, "torchattacks": part_torchattacks}
        for name in args.parts.split(","):
            parts[name](args, device)
    report(args)


if __name__ == "__main__":
    main()
