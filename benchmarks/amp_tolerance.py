"""Mixed precision's map tolerance (issue 19 §2; ``amp=``, :mod:`idlsec.precision`): per interpreter
(CAM, Grad-CAM, Grad) and autocast dtype, how far the maps of ``amp=dtype`` are from the float32
maps of the same images, and ADV^2's outcome with and without ``amp`` over a few steps.

    OMP_NUM_THREADS=1 IDLSEC_MIRROR=../shared python benchmarks/amp_tolerance.py [--n 16] [--dtypes bf16]
    python benchmarks/amp_tolerance.py --device cuda --dtypes bf16 fp16 --out-dir $OUT   # GPU

cifar10-resnet20, ``--n`` correctly classified CIFAR-10 test images (seed 0, their random targets).
Maps: each interpreter's map of the target class, float32 vs ``amp``: max abs difference of the
min-max normalised maps, and the papers' top-k IoU (mean over k = 5%, ..., 50%) between them,
per image (both kept in the JSON). Within tolerance (our threshold, :data:`TOLERANCE`): every
image's IoU >= 0.9 and max abs difference <= 0.1. Attack: ADV^2 (``--warmup-steps`` +
``--steps``, the papers' other settings) on each interpreter, eager float32 vs ``amp``; its ASR
and the IoU between the adversarial and benign maps (both maps from the float32 interpreter: what
the system shows), and the share of images whose success differs. ``--tiny``: 4 images, 2 + 2
steps (a check of the script, not a measurement).

Writes ``amp_tolerance.json`` (per-image values) and ``amp_tolerance.md`` (picked up by
benchmarks/make_benchmarks_md.py) under ``--out-dir`` (default benchmarks/results)."""

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
TOLERANCE = {"iou_min": 0.9, "max_abs": 0.1}
INTERPRETERS = ("cam", "gradcam", "grad")


def _interp(name, model, amp=None):
    from idlsec.interpreters import CAM, Grad, GradCAM

    return {"cam": CAM, "gradcam": GradCAM, "grad": Grad}[name](model, amp=amp)


def maps_rows(model, x, t, dtypes) -> dict:
    from idlsec.metrics import topk_iou_curve

    out = {}
    for name in INTERPRETERS:
        ref = _interp(name, model)(x, t)
        for dt in dtypes:
            got = _interp(name, model, dt)(x, t)
            diff = (got - ref).abs().flatten(1).amax(1)
            iou = topk_iou_curve(got, ref).mean(1)
            out[f"{name}/{dt}"] = {
                "max_abs": diff.tolist(), "iou": iou.tolist(), "dtype": str(got.dtype),
                "within": bool((iou >= TOLERANCE["iou_min"]).all() and (diff <= TOLERANCE["max_abs"]).all())}
    return out


def attack_rows(model, x, t, dtypes, warmup, steps) -> dict:
    from idlsec.attacks import ADV2
    from idlsec.metrics import topk_iou_curve

    out = {}
    for name in INTERPRETERS:
        interp = _interp(name, model)
        runs = {}
        for dt in (None, *dtypes):
            t0 = time.process_time()
            res = ADV2(model, interp, warmup_steps=warmup, steps=steps, amp=dt).run(x, t)
            runs[dt or "float32"] = {
                "success": res.success.int().tolist(),
                "iou": topk_iou_curve(res.adv_map, res.benign_map).mean(1).tolist(),
                "cpu_s": time.process_time() - t0}
        ref = runs["float32"]
        for dt in dtypes:
            runs[dt]["success_differs"] = sum(a != b for a, b in zip(runs[dt]["success"], ref["success"]))
        out[name] = runs
    return out


def _mean(v):
    return statistics.fmean(v) if v else float("nan")


def markdown(data) -> str:
    r = data["rows"]
    dev = data["device"]
    lines = [f"## Mixed precision: map tolerance ({dev}, {', '.join(data['dtypes'])})", "",
             f"Command: `{data['command']}`  ",
             f"Machine: {data['machine']}; total {data['seconds']:.0f} s wall.", "",
             (f"cifar10-resnet20, {r['n']} correctly classified CIFAR-10 test images (seed 0, their random targets). "
              "Each interpreter under `amp=` (autocast forward, map arithmetic and maps in float32) against its float32 "
              "maps of the same images and target classes: max abs difference of the min-max normalised maps and the "
              "top-k IoU between them (mean over k = 5%..50%), per image; within tolerance: every image's IoU >= "
              f"{TOLERANCE['iou_min']} and max abs <= {TOLERANCE['max_abs']} (our threshold). Written by "
              "`benchmarks/amp_tolerance.py` (per-image values: the JSON next to this file)."
              + (" These are CPU figures (bf16 autocast on the CPU); fp16 and GPU figures come from "
                 "`benchmarks/gpu/speed.sh`." if dev == "cpu" else "")), "",
             "| interpreter / dtype | max abs (max over images) | max abs (mean) | IoU (min) | IoU (mean) | within |",
             "|---|---|---|---|---|---|"]
    for k, v in r["maps"].items():
        lines.append(f"| {k} | {max(v['max_abs']):.3f} | {_mean(v['max_abs']):.3f} | {min(v['iou']):.3f} | "
                     f"{_mean(v['iou']):.3f} | {'yes' if v['within'] else '**no**'} |")
    ok = [k for k, v in r["maps"].items() if v["within"]]
    bad = [k for k, v in r["maps"].items() if not v["within"]]
    lines += ["", (f"Within tolerance: {', '.join(ok) or 'none'}; outside: {', '.join(bad) or 'none'}. "
                   "Use `amp` only where it is within (autocast rounds every activation to the "
                   "dtype's 8 (bf16) or 11 (fp16) significant bits; a gradient map such as Grad's amplifies it).")]
    a = r["attack"]
    lines += ["", (f"ADV^2 ({r['warmup_steps']} + {r['steps']} steps, targeted, the papers' other settings) with "
                   "and without `amp`: ASR and the IoU of the adversarial map with the benign map (both from the "
                   "float32 interpreter), means over the images:"), "",
              "| interpreter | precision | ASR | IoU | images whose success differs | CPU s |", "|---|---|---|---|---|---|"]
    for name, runs in a.items():
        for dt, v in runs.items():
            lines.append(f"| {name} | {dt} | {_mean(v['success']):.3f} | {_mean(v['iou']):.3f} | "
                         f"{v.get('success_differs', '–')} | {v['cpu_s']:.1f} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--dtypes", nargs="+", default=["bf16"], choices=["bf16", "fp16"])
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10, help="ADV^2 joint-stage steps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiny", action="store_true", help="4 images, 2 + 2 steps: checks the script only")
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--report-only", action="store_true", help="rebuild the markdown from the JSON")
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    if args.report_only:
        data = json.loads((out / "amp_tolerance.json").read_text())
        (out / "amp_tolerance.md").write_text(markdown(data))
        return print(markdown(data))
    if args.tiny:
        args.n, args.warmup_steps, args.steps = 4, 2, 2
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.environ.setdefault("IDLSEC_MIRROR", str(ROOT.parent / "shared"))
    from idlsec.data import load_dataset, select_images
    from idlsec.models import load_model
    from idlsec.runtime import cpu_name

    t0 = time.perf_counter()
    model = load_model("cifar10-resnet20").to(args.device)
    sel = select_images(load_dataset("cifar10", "test"), args.n, seed=0, model=model, correct_only=True,
                        device=args.device)
    x, t = sel.x.to(args.device), sel.targets.to(args.device)
    rows = {"n": len(x), "warmup_steps": args.warmup_steps, "steps": args.steps,
            "maps": maps_rows(model, x, t, args.dtypes),
            "attack": attack_rows(model, x, t, args.dtypes, args.warmup_steps, args.steps)}
    machine = (f"GPU ({torch.cuda.get_device_name()})" if args.device.startswith("cuda")
               else f"CPU ({cpu_name()}, {os.cpu_count()} cores, shared with other jobs); {torch.get_num_threads()} thread")
    data = {"command": "python benchmarks/amp_tolerance.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": f"{machine}; torch {torch.__version__}", "device": args.device.split(":")[0],
            "dtypes": args.dtypes, "tiny": args.tiny, "seconds": time.perf_counter() - t0, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "amp_tolerance.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / "amp_tolerance.md").write_text(markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
