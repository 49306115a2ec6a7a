"""GPU speed (issue 19's GPU targets), prepared for ``benchmarks/gpu/speed.sh``: targeted PGD against
torchattacks at batch 100 on cifar10-resnet20 (ours eager, ``cuda_graph=True``, ``compile=True``,
both), and one ADV^2 (CAM) step against a bare forward+backward (eager, ``cuda_graph=True``,
``amp="fp16"``, both), with the agreement of the examples.

    python benchmarks/speed_gpu.py --device cuda --out $OUT/speed/speed_gpu.json
    python benchmarks/speed_gpu.py --device cpu --tiny --out /tmp/speed_gpu.json   # checks the script

Timing: wall seconds with ``torch.cuda.synchronize()`` around each call (the process's CPU time
would miss the GPU's), medians over ``--reps`` round-robin rounds after one warm-up call each (the
warm-up holds compilation and graph capture, reported apart). PGD: eps 8/255, alpha 2/255,
``--pgd-steps`` steps, no random start, the whole call. ADV^2 step: the difference of the whole
call's median at 2S and at S joint steps (no warm start), divided by S (``--steps`` = S), so the
benign map, validation and graph capture cancel; the bare forward+backward (cross-entropy, gradient
to the input) is timed the same way. Targets (issue 19, GPU): PGD <= 0.5x torchattacks' time,
ADV^2 (CAM) step <= 1.2x a bare forward+backward. Every warning (a failed capture, a compile
fallback) is kept in the JSON. ``--tiny``: 4 images, 3 steps, 2 repeats, no compile."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"pgd": 0.5, "adv2": 1.2}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: dict, reps: int, device) -> tuple[dict, dict, dict]:
    """(median seconds, every repeat's seconds, warm-up seconds) per function, round-robin."""
    warm, runs = {}, {k: [] for k in fns}
    for k, f in fns.items():
        _sync(device)
        t = time.perf_counter()
        f()
        _sync(device)
        warm[k] = time.perf_counter() - t
    for _ in range(reps):
        for k, f in fns.items():
            _sync(device)
            t = time.perf_counter()
            f()
            _sync(device)
            runs[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in runs.items()}, runs, warm


def pgd_block(model, x, t, args, device) -> dict:
    from idlsec import cuda_graphs
    from idlsec.attacks import PGD

    kw = {"eps": 8 / 255, "alpha": 2 / 255, "steps": args.pgd_steps, "random_start": False, "targeted": True}
    variants = {"ours eager": {}, "ours cuda_graph": {"cuda_graph": True}}
    if args.compile:
        variants |= {"ours compiled": {"compile": True}, "ours compiled+cuda_graph": {"compile": True,
                                                                                     "cuda_graph": True}}
    attacks = {k: PGD(model, **kw, **v) for k, v in variants.items()}
    out: dict = {}
    fns = {k: (lambda a=a, k=k: out.__setitem__(k, a(x, t))) for k, a in attacks.items()}
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=kw["eps"], alpha=kw["alpha"], steps=kw["steps"], random_start=False)
        ta.set_mode_targeted_by_label(quiet=True)
        fns = {"torchattacks": lambda: out.__setitem__("torchattacks", ta(x, t)), **fns}
    except ImportError as err:
        out["torchattacks_missing"] = str(err)
    med, runs, warm = timed(fns, args.reps, device)
    eager = out["ours eager"]
    return {"seconds": med, "runs": runs, "warmup_s": warm, "steps": args.pgd_steps,
            "max_abs_vs_eager": {k: float((v - eager).abs().max()) for k, v in out.items()
                                 if isinstance(v, torch.Tensor) and k != "ours eager"},
            "graphs": {k: {n: {"captures": s.captures, "replays": s.replays, "failed": s.failed}
                           for n, s in cuda_graphs.steps_of(a).items()} for k, a in attacks.items()},
            "ratios": {f"{k} / torchattacks": med[k] / med["torchattacks"] for k in attacks if "torchattacks" in med}}


def adv2_block(model, x, t, args, device) -> dict:
    from idlsec import cuda_graphs
    from idlsec.attacks import ADV2
    from idlsec.interpreters import CAM

    cam = CAM(model)
    s1, s2 = args.steps, 2 * args.steps
    variants = {"eager": {}, "cuda_graph": {"cuda_graph": True}, "amp fp16": {"amp": "fp16"},
                "cuda_graph+amp fp16": {"cuda_graph": True, "amp": "fp16"}}
    attacks = {(k, s): ADV2(model, cam, warmup_steps=0, steps=s, **v) for k, v in variants.items() for s in (s1, s2)}
    out: dict = {}
    fns = {f"{k} x{s}": (lambda a=a, key=(k, s): out.__setitem__(key, a(x, t))) for (k, s), a in attacks.items()}
    ce = torch.nn.functional.cross_entropy

    def bare(steps):
        for _ in range(steps):
            xg = x.clone().requires_grad_(True)
            torch.autograd.grad(ce(model(xg), t), xg)

    fns |= {f"bare x{s}": (lambda s=s: bare(s)) for s in (s1, s2)}
    med, runs, warm = timed(fns, args.reps, device)
    per_step = {k: (med[f"{k} x{s2}"] - med[f"{k} x{s1}"]) / s1 for k in (*variants, "bare")}
    ref = out[("eager", s2)]
    with torch.no_grad():
        ok = {k: float((model(out[(k, s2)]).argmax(1) == t).float().mean()) for k in variants}
    return {"per_step_s": per_step, "seconds": med, "runs": runs, "warmup_s": warm, "steps": [s1, s2],
            "interpreter": "cam",
            "ratios": {f"{k} step / bare forward+backward": per_step[k] / per_step["bare"] for k in variants},
            "max_abs_vs_eager": {k: float((out[(k, s2)] - ref).abs().max()) for k in variants if k != "eager"},
            "success": ok,
            "graphs": {f"{k} x{s}": {n: {"captures": g.captures, "replays": g.replays, "failed": g.failed}
                                     for n, g in cuda_graphs.steps_of(a).items()} for (k, s), a in attacks.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--steps", type=int, default=50, help="S: ADV^2 step cost from S and 2S joint steps")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--tiny", action="store_true", help="4 images, 3 steps, 2 repeats, no compile")
    ap.add_argument("--out", required=True, help="the JSON to write")
    args = ap.parse_args(argv)
    if args.tiny:
        args.n, args.pgd_steps, args.steps, args.reps, args.compile = 4, 3, 3, 2, False
    os.environ.setdefault("IDLSEC_MIRROR", str(ROOT.parent / "shared"))
    from idlsec.data import load_dataset, select_images
    from idlsec.models import load_model

    device = torch.device(args.device)
    t0 = time.perf_counter()
    model = load_model("cifar10-resnet20").to(device).eval()
    sel = select_images(load_dataset("cifar10", "test"), args.n, seed=0, model=model, correct_only=True,
                        device=device)
    x, t = sel.x.to(device), sel.targets.to(device)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        rows = {"n": len(x), "pgd": pgd_block(model, x, t, args, device), "adv2": adv2_block(model, x, t, args, device)}
    rows["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in rec})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    data = {"command": "python benchmarks/speed_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": f"{name}; torch {torch.__version__}", "tiny": args.tiny, "targets": TARGETS,
            "seconds": time.perf_counter() - t0, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({"pgd": rows["pgd"]["ratios"], "pgd_max_abs": rows["pgd"]["max_abs_vs_eager"],
                      "adv2": rows["adv2"]["ratios"], "adv2_max_abs": rows["adv2"]["max_abs_vs_eager"],
                      "warnings": rows["warnings"]}, indent=1))


if __name__ == "__main__":
    main()
