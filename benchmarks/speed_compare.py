"""Speed side by side in one run (issue 19 §4): ours vs torchattacks' PGD, vs Captum's LayerGradCam
and Saliency and pytorch-grad-cam's GradCAM, eager vs compiled (``compile=True``,
:mod:`idlsec.compiling`), and one ADV^2/AdvEdge step vs a bare eager forward+backward.

    OMP_NUM_THREADS=1 IDLSEC_MIRROR=../shared python benchmarks/speed_compare.py [--n 64] [--reps 5]

cifar10-resnet20, ``--n`` correctly classified CIFAR-10 test images (seed 0, their random targets),
one batch. Times are process CPU time on one thread (another job on a shared machine delays a
call but adds little to its CPU time), medians over ``--reps`` rounds in which every method runs
once (round-robin), after one warm-up call each; the compiled methods' warm-up call holds the
compilation, reported apart as wall-clock seconds (Inductor compiles C++ in subprocesses, outside
the process's CPU time). PGD: targeted, eps 8/255, alpha 2/255, ``--pgd-steps`` steps, no random
start, the whole call (validation included). Maps: ours native-resolution min-max normalised
torch maps; Captum raw attributions; pytorch-grad-cam its default NumPy maps. ADV^2/AdvEdge (CAM,
joint stage, default settings): the median step time (callback ticks) over ``--steps`` steps.
``--agreement-only``: where compiled and eager PGD part (added to the JSON of a run).

Writes benchmarks/results/speed_compare.json (the rows) and speed_compare.md (the section).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGETS = {  # issue 19, CPU
    "pgd": ("compiled targeted PGD time / torchattacks' time", "<=", 0.85),
    "gradcam": ("compiled Grad-CAM throughput / Captum LayerGradCam's", ">=", 1.15),
    "adv2": ("compiled ADV^2 (CAM) step / bare eager forward+backward", "<=", 1.0),
    "advedge": ("compiled AdvEdge (CAM) step / bare eager forward+backward", "<=", 1.0),
}


def timed(fns: dict, reps: int, raw: dict | None = None) -> tuple[dict, dict]:
    """(median process seconds per call, wall seconds of the warm-up call) of each function,
    timed round-robin; ``raw`` receives every repeat's seconds (round ``i`` of each function at
    index ``i``: the repeats are paired), for the intervals of the report."""
    warm = {}
    for k, f in fns.items():
        t = time.perf_counter()
        f()
        warm[k] = time.perf_counter() - t
    times: dict = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t = time.process_time()
            f()
            times[k].append(time.process_time() - t)
    if raw is not None:
        raw.update(times)
    return {k: statistics.median(v) for k, v in times.items()}, warm


def step_times(make, steps: int, reps: int, raw: dict | None = None) -> dict:
    """Median seconds of one attack step of each ``make[name](callback)`` attack runner;
    ``raw`` receives every step's seconds."""
    out = {}
    for name, run in make.items():
        ticks: list = []
        for _ in range(reps):
            stamps = [time.process_time()]
            run(lambda *_, st=stamps: st.append(time.process_time()))
            ticks += [b - a for a, b in zip(stamps[1:-1], stamps[2:])]  # the first step holds setup
        out[name] = statistics.median(ticks)
        if raw is not None:
            raw[name] = ticks
    return out


def agreement(a: torch.Tensor, b: torch.Tensor, model, t) -> dict:
    """How far two batches of examples are apart: max abs difference, share of the values that
    differ by more than 1e-5, and the images whose targeted success differs."""
    with torch.no_grad():
        ok_a, ok_b = model(a).argmax(1) == t, model(b).argmax(1) == t
    d = (a - b).abs()
    return {"max_abs": float(d.max()), "share_over_1e-5": float((d > 1e-5).float().mean()),
            "success_a": float(ok_a.float().mean()), "success_b": float(ok_b.float().mean()),
            "success_differs": int((ok_a != ok_b).sum())}


def measure(args) -> dict:
    import torchattacks
    from captum.attr import LayerGradCam, Saliency
    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from idlsec import compiling
    from idlsec.attacks import ADV2, PGD, AdvEdge
    from idlsec.data import load_dataset, select_images
    from idlsec.interpreters import CAM, Grad, GradCAM
    from idlsec.models import get_layer, load_model

    model = load_model("cifar10-resnet20")
    sel = select_images(load_dataset("cifar10", "test"), args.n, seed=0, model=model, correct_only=True)
    x, t = sel.x, sel.targets
    rows: dict = {"n": len(x)}

    # --- PGD -----------------------------------------------------------------------------------
    pgd = {"eps": 8 / 255, "alpha": 2 / 255, "steps": args.pgd_steps, "random_start": False}
    ours, ours_c = PGD(model, targeted=True, **pgd), PGD(model, targeted=True, compile=True, **pgd)
    theirs = torchattacks.PGD(model, **pgd)
    theirs.set_mode_targeted_by_label(quiet=True)
    out, pgd_runs = {}, {}
    med, warm = timed({"torchattacks": lambda: out.__setitem__("ta", theirs(x, t)),
                       "ours eager": lambda: out.__setitem__("eager", ours(x, t)),
                       "ours compiled": lambda: out.__setitem__("compiled", ours_c(x, t))}, args.reps, pgd_runs)
    rows["pgd"] = {"seconds": med, "runs": pgd_runs, "compile_wall_s": warm["ours compiled"] - med["ours eager"],
                   "steps": args.pgd_steps,
                   "compiled_vs_eager": agreement(out["compiled"], out["eager"], model, t),
                   "eager_vs_torchattacks": agreement(out["eager"], out["ta"], model, t),
                   "compile_failed": compiling.compiled_model(model).failed}

    # --- maps ----------------------------------------------------------------------------------
    layer = get_layer(model, model.card.gradcam_layer)
    gc, gc_c = GradCAM(model), GradCAM(model, compile=True)
    grad, grad_c = Grad(model, form="paper"), Grad(model, form="paper", compile=True)
    cam, cam_c = CAM(model), CAM(model, compile=True)
    cam_c(x, t)  # CAM verifies its layers on its first (eager) call
    pgc = PGCGradCAM(model=model, target_layers=[layer])
    pgc_targets = [ClassifierOutputTarget(int(c)) for c in t]
    cap_gc, cap_sal = LayerGradCam(model, layer), Saliency(model)
    maps = {
        "gradcam/pytorch-grad-cam": lambda: pgc(x.clone().requires_grad_(), targets=pgc_targets),
        "gradcam/captum LayerGradCam": lambda: cap_gc.attribute(x, target=t, relu_attributions=True),
        "gradcam/ours eager": lambda: gc(x, t),
        "gradcam/ours compiled": lambda: gc_c(x, t),
        "grad/captum Saliency": lambda: cap_sal.attribute(x, target=t, abs=True),
        "grad/ours eager": lambda: grad(x, t),
        "grad/ours compiled": lambda: grad_c(x, t),
        "cam/ours eager": lambda: cam(x, t),
        "cam/ours compiled": lambda: cam_c(x, t),
    }
    map_runs: dict = {}
    med, warm = timed(maps, args.reps * 4, map_runs)
    pgc.activations_and_grads.release()
    rows["maps"] = {"seconds": med, "runs": map_runs, "compile_wall_s": {k: warm[k] - med[k.replace("compiled", "eager")]
                                                      for k in maps if k.endswith("compiled")},
                    "diff_compiled_eager": {
                        "gradcam": float((gc_c(x, t) - gc(x, t)).abs().max()),
                        "grad": float((grad_c(x, t) - grad(x, t)).abs().max()),
                        "cam": float((cam_c(x, t) - cam(x, t)).abs().max())}}

    # --- one ADV^2 / AdvEdge step vs a bare eager forward+backward --------------------------------
    ce = torch.nn.functional.cross_entropy

    def bare(cb):
        for _ in range(args.steps + 1):
            xg = x.clone().requires_grad_(True)
            torch.autograd.grad(ce(model(xg), t), xg)
            cb()

    def attack(cls, compile):
        def run(cb):
            res["x"] = cls(model, cam, warmup_steps=0, steps=args.steps, compile=compile, callback=cb)(x, t)
        return run

    res: dict = {}
    for cls in (ADV2, AdvEdge):  # compile outside the timing
        cls(model, cam, warmup_steps=0, steps=2, compile=True)(x, t)
    runs = {"bare eager forward+backward": bare}
    outs = {}
    for cls, name in ((ADV2, "adv2"), (AdvEdge, "advedge")):
        for compile in (False, True):
            key = f"{name} {'compiled' if compile else 'eager'}"
            runs[key] = attack(cls, compile)
    steps, step_runs = {}, {}
    for key, run in runs.items():  # one attack at a time, its steps all alike
        steps[key] = step_times({key: run}, args.steps, args.reps, step_runs)[key]
        outs[key] = res.get("x")
    rows["steps"] = {"seconds": steps, "runs": step_runs, "n_steps": args.steps, "interpreter": "cam",
                     "compiled_vs_eager": {n: agreement(outs[f"{n} compiled"], outs[f"{n} eager"], model, t)
                                           for n in ("adv2", "advedge")}}
    return rows


def measure_agreement(args) -> dict:
    """Where compiled and eager PGD part: the first gradient's relative error and sign flips, and
    the share of example values off by > 1e-5 after k steps (``--agreement-only`` adds it to the
    JSON of an earlier run)."""
    from idlsec.attacks import PGD
    from idlsec.compiling import compiled_model
    from idlsec.data import load_dataset, select_images
    from idlsec.metrics.losses import exact_cross_entropy
    from idlsec.models import load_model

    model = load_model("cifar10-resnet20")
    sel = select_images(load_dataset("cifar10", "test"), args.n, seed=0, model=model, correct_only=True)
    x, t = sel.x, sel.targets
    grads = []
    for m in (model, compiled_model(model)):
        xg = x.clone().requires_grad_()
        grads.append(torch.autograd.grad(exact_cross_entropy(m(xg), t, reduction="mean"), xg)[0])
    out = {"grad_rel_err": float((grads[0] - grads[1]).abs().max() / grads[0].abs().max()),
           "grad_sign_flips": int((grads[0].sign() != grads[1].sign()).sum()), "values": grads[0].numel(),
           "by_steps": {}}
    for k in (1, 2, 5, 10, 20):
        kw = {"eps": 8 / 255, "alpha": 2 / 255, "steps": k, "random_start": False, "targeted": True}
        d = (PGD(model, **kw)(x, t) - PGD(model, compile=True, **kw)(x, t)).abs()
        out["by_steps"][k] = {"share_over_1e-5": float((d > 1e-5).float().mean()), "max_abs": float(d.max())}
    return out


def ratios(rows) -> list[tuple]:
    """(what, measured, target text, met or None) for every ratio of the report."""
    p, m, s = rows["pgd"]["seconds"], rows["maps"]["seconds"], rows["steps"]["seconds"]
    bare = s["bare eager forward+backward"]

    def thr(peer, ours):  # throughput ratio = time ratio inverted
        return m[peer] / m[ours]

    out = [
        ("PGD: ours eager time / torchattacks", p["ours eager"] / p["torchattacks"], None),
        ("PGD: ours compiled time / torchattacks", p["ours compiled"] / p["torchattacks"], "pgd"),
        ("PGD: compiled speed-up over eager", p["ours eager"] / p["ours compiled"], None),
        ("Grad-CAM: ours eager throughput / Captum LayerGradCam",
         thr("gradcam/captum LayerGradCam", "gradcam/ours eager"), None),
        ("Grad-CAM: ours compiled throughput / Captum LayerGradCam",
         thr("gradcam/captum LayerGradCam", "gradcam/ours compiled"), "gradcam"),
        ("Grad-CAM: ours eager throughput / pytorch-grad-cam",
         thr("gradcam/pytorch-grad-cam", "gradcam/ours eager"), None),
        ("Grad-CAM: ours compiled throughput / pytorch-grad-cam",
         thr("gradcam/pytorch-grad-cam", "gradcam/ours compiled"), None),
        ("Grad: ours eager throughput / Captum Saliency", thr("grad/captum Saliency", "grad/ours eager"), None),
        ("Grad: ours compiled throughput / Captum Saliency",
         thr("grad/captum Saliency", "grad/ours compiled"), None),
        ("CAM: compiled speed-up over eager", m["cam/ours eager"] / m["cam/ours compiled"], None),
        ("ADV^2 (CAM) eager step / bare eager forward+backward", s["adv2 eager"] / bare, None),
        ("ADV^2 (CAM) compiled step / bare eager forward+backward", s["adv2 compiled"] / bare, "adv2"),
        ("AdvEdge (CAM) eager step / bare eager forward+backward", s["advedge eager"] / bare, None),
        ("AdvEdge (CAM) compiled step / bare eager forward+backward", s["advedge compiled"] / bare, "advedge"),
    ]
    result = []
    for what, v, key in out:
        if key is None:
            result.append((what, v, "–", None))
            continue
        _, op, t = TARGETS[key]
        result.append((what, v, f"{op} {t:g}", v <= t if op == "<=" else v >= t))
    return result


def markdown(data) -> str:
    rows = data["rows"]
    n, p, m, s = rows["n"], rows["pgd"], rows["maps"], rows["steps"]
    lines = [
        "## Speed against the peers: eager and compiled (CPU)", "",
        f"Command: `{data['command'].strip()}`  ",
        f"Machine: {data['machine']}; shared with other jobs (parallel workers on its 2 cores) during the "
        f"run; total {data['seconds']:.0f} s wall.", "",
        (f"cifar10-resnet20, {n} correctly classified CIFAR-10 test images (seed 0, their random targets), one "
         "batch. Process CPU time on one thread, medians over round-robin repeats after a warm-up call; the "
         "compiled methods' (`compile=True`, Inductor) first call holds the compilation, shown apart as wall "
         "seconds on the shared machine. Written by `benchmarks/speed_compare.py` (rows: "
         "`benchmarks/results/speed_compare.json`)."), "",
        "| ratio | measured | target (issue 19, CPU) | met |", "|---|---|---|---|",
    ]
    for what, v, target, met in ratios(rows):
        lines.append(f"| {what} | {v:.2f}x | {target} | {'–' if met is None else ('yes' if met else '**no**')} |")
    lines += ["", f"PGD (targeted, {p['steps']} steps, whole call), seconds per call:", "",
              "| method | s/call | compile (wall s) |", "|---|---|---|"]
    for k, v in p["seconds"].items():
        c = f"{p['compile_wall_s']:.0f}" if k == "ours compiled" else "–"
        lines.append(f"| {k} | {v:.3f} | {c} |")
    lines += ["", "Agreement of the examples (see the notes below):", "",
              ("| pair | max abs diff | share of values off by > 1e-5 | success rate (first / second) | "
               "images whose success differs |"), "|---|---|---|---|---|",
              _agree_row("PGD compiled / eager", p["compiled_vs_eager"]),
              _agree_row("PGD eager / torchattacks", p["eager_vs_torchattacks"]),
              *(_agree_row(f"{k} compiled / eager ({s['n_steps']} joint steps)", v)
                for k, v in s["compiled_vs_eager"].items()),
              "", f"Maps, {n} per call:", "", "| method | s/call | maps/s | compile (wall s) |", "|---|---|---|---|"]
    for k, v in m["seconds"].items():
        c = m["compile_wall_s"].get(k)
        lines.append(f"| {k} | {v:.3f} | {n / v:.0f} | {'–' if c is None else f'{c:.0f}'} |")
    d = m["diff_compiled_eager"]
    lines += ["", ("Max abs difference of the maps, compiled vs eager: " +
                   ", ".join(f"{k} {v:.1e}" for k, v in d.items()) + "."), "",
              (f"One joint-stage step (CAM, default settings, batch {n}), median over the last "
               f"{s['n_steps'] - 1} of {s['n_steps']} steps of each repeat:"), "",
              "| run | ms/step |", "|---|---|"]
    lines += [f"| {k} | {1e3 * v:.1f} |" for k, v in s["seconds"].items()]
    lines.append("")
    a = rows.get("agreement")
    if a:
        lines += [(f"Compiled vs eager PGD by steps (`--agreement-only`: `{a['command']}`): the first gradient's "
                   f"relative error (max abs difference / max abs value) {a['grad_rel_err']:.1e}, its signs "
                   f"flipped at {a['grad_sign_flips']} of {a['values']} values."), "",
                  "| PGD steps | share of values off by > 1e-5 | max abs diff |", "|---|---|---|"]
        lines += [f"| {k} | {v['share_over_1e-5']:.2e} | {v['max_abs']:.1e} |" for k, v in a["by_steps"].items()]
        lines.append("")
    if data.get("notes"):
        lines += [data["notes"].strip(), ""]
    return "\n".join(lines)


def _agree_row(what: str, a: dict) -> str:
    return (f"| {what} | {a['max_abs']:.1e} | {a['share_over_1e-5']:.2e} | {a['success_a']:.3f} / "
            f"{a['success_b']:.3f} | {a['success_differs']} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--steps", type=int, default=12, help="joint-stage steps per timed ADV^2/AdvEdge run")
    ap.add_argument("--json", default=str(RESULTS / "speed_compare.json"))
    ap.add_argument("--out", default=str(RESULTS / "speed_compare.md"))
    ap.add_argument("--notes", default=str(RESULTS / "speed_compare_notes.md"),
                    help="markdown appended to the section (discussion of the figures)")
    ap.add_argument("--report-only", action="store_true", help="rebuild the markdown from --json")
    ap.add_argument("--agreement-only", action="store_true",
                    help="add the compiled-vs-eager PGD agreement by steps to --json, then rebuild the markdown")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("IDLSEC_MIRROR", str(ROOT.parent / "shared"))
    if args.report_only or args.agreement_only:
        data = json.loads(Path(args.json).read_text())
        if args.agreement_only:
            cmd = "python benchmarks/speed_compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
            data["rows"]["agreement"] = {"command": cmd.strip(), **measure_agreement(args)}
            Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    else:
        from idlsec.runtime import cpu_name

        t0 = time.perf_counter()
        rows = measure(args)
        data = {"command": ("python benchmarks/speed_compare.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip(),
                "machine": f"CPU ({cpu_name()}, {os.cpu_count()} cores); torch {torch.__version__}; 1 thread",
                "seconds": time.perf_counter() - t0, "rows": rows}
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    notes = Path(args.notes)
    data["notes"] = notes.read_text() if notes.is_file() else ""
    Path(args.out).write_text(markdown(data))
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
