"""Bring-your-own-model attack step cost (issue 14): one white-box attack step on a model without
a card (layers found by :mod:`idlsec.interpreters.layers`) against the bare passes it contains.

    python benchmarks/byom_step_cost.py [--repeats 3] [--batch 2] [--threads 1] [--models resnet50,vit_b_16]

On torchvision ResNet-50 and ViT-B/16 at 224 (random weights; the ViT head re-initialised, since
torchvision starts it at zero), batch 2. One step is ADV^2's joint step: ``logits, maps =
interp.logits_and_maps(x, t)`` (create_graph=True; the math attention kernel entered by the
interpreter), ``loss = CE + c * map_distance(maps, m_t)``, the gradient with respect to x.

- CAM / Grad-CAM step vs a bare forward+backward to the input (CE, ``autograd.grad`` to x);
  target <= 1.2x. CAM refuses the ViT (its head is not GAP+linear): reported as such.
- Grad step (ADV^2's form: cross-entropy gradient, smooth-ReLU surrogate, 4x average pool) vs a
  bare double backward (``g = grad(CE, x, create_graph=True)``, then ``grad(|g|.sum(), x)``, under
  the math attention kernel, without which the ViT cannot do it at all on CPU); target <= 1.2x.
  ``grad_exact`` (ResNet-50): the same step without the surrogate (``surrogate=None``), which
  separates the surrogate's cost from the rest of the step.

Times: median seconds per step over ``--repeats`` timed calls after one warm-up, the cases of a
model timed round-robin so that the load of a shared machine affects them alike. Memory: peak RSS
of one step above the steady state (model, input, interpreter, one warm-up step) in a fresh
subprocess per case, divided by the batch: the kernel's peak-RSS counter (VmHWM, reset through
/proc/self/clear_refs) on CPU, ``torch.cuda.max_memory_allocated`` on GPU.

Writes benchmarks/results/byom_step_cost.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CASES = {"resnet50": ("bare_fb", "cam", "gradcam", "bare_db", "grad", "grad_exact"),
         "vit_b_16": ("bare_fb", "cam", "gradcam", "bare_db", "grad")}
BASELINE = {"cam": "bare_fb", "gradcam": "bare_fb", "grad": "bare_db", "grad_exact": "bare_db"}
TARGET = 1.2


def build(arch: str, device: str):
    import torchvision.models as tvm

    from idlsec.models import with_normalization
    from idlsec.models.normalize import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    net = getattr(tvm, arch)(weights=None)
    if arch.startswith("vit"):
        torch.nn.init.normal_(net.heads.head.weight, std=0.01)
    model = with_normalization(net, IMAGENET_MEAN, IMAGENET_STD).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_step(case: str, model, x, t):
    """A zero-argument function running one step of ``case`` (None if the interpreter refuses)."""
    from idlsec.attacks import _idls
    from idlsec.errors import ConfigError
    from idlsec.interpreters import get_interpreter
    from idlsec.interpreters.layers import second_order_context

    if case == "bare_fb":
        def step():
            xa = x.detach().requires_grad_()
            return torch.autograd.grad(F.cross_entropy(model(xa), t), xa)[0]
        return step
    if case == "bare_db":
        def step():
            xa = x.detach().requires_grad_()
            with second_order_context(model):
                (g,) = torch.autograd.grad(F.cross_entropy(model(xa), t), xa, create_graph=True)
            return torch.autograd.grad(g.abs().sum(), xa)[0]
        return step
    try:
        if case.startswith("grad") and case != "gradcam":  # grad_exact: no smooth-ReLU surrogate
            interp = get_interpreter("grad", model, **({"surrogate": None} if case == "grad_exact" else {}))
        else:
            interp = get_interpreter(case, model, input_size=tuple(x.shape[1:]))
    except ConfigError as e:
        return str(e)
    prof = _idls.profile_for(interp)
    with torch.enable_grad():
        target_map = interp(x).detach().flip(-1)  # a target map other than the benign one

    def step():
        xa = x.detach().requires_grad_()
        logits, maps = interp.logits_and_maps(xa, t)
        loss = F.cross_entropy(logits, t, reduction="none") + prof.c * _idls.map_distance(
            maps, target_map, reduction=prof.reduction)
        return torch.autograd.grad(loss.sum(), xa)[0]
    return step


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_cases(arch, args) -> dict:
    model = build(arch, args.device)
    x = torch.rand(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(args.device)
    t = torch.arange(args.batch, device=args.device) + 1
    steps, out = {}, {}
    for case in CASES[arch]:
        start = time.perf_counter()
        fn = make_step(case, model, x, t)
        if isinstance(fn, str):
            out[case] = {"refused": fn}
            continue
        steps[case] = fn
        out[case] = {"setup_s": time.perf_counter() - start}
    for fn in steps.values():  # warm-up
        fn()
    times = {k: [] for k in steps}
    for _ in range(args.repeats):
        for k, fn in steps.items():
            _sync(args.device)
            s = time.perf_counter()
            fn()
            _sync(args.device)
            times[k].append(time.perf_counter() - s)
    for k, v in times.items():
        out[k]["step_s"] = statistics.median(v)
        out[k]["times_s"] = v
    for k, base in BASELINE.items():
        if "step_s" in out.get(k, {}) and "step_s" in out.get(base, {}):
            out[k]["ratio"] = out[k]["step_s"] / out[base]["step_s"]
            out[k]["baseline"] = base
            out[k]["met"] = out[k]["ratio"] <= TARGET
    return out


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def memory_child(arch: str, case: str, batch: int, device: str) -> dict:
    """Run in a fresh process: the peak memory of one step above the steady state (model, input,
    interpreter built, one warm-up step done), per image. CPU: the peak-RSS counter (VmHWM) is
    reset through /proc/self/clear_refs before the step, with glibc returning large blocks to the
    system on free (MALLOC_MMAP_THRESHOLD_ set by the parent) so that RSS follows live memory."""
    torch.set_num_threads(1)
    model = build(arch, device)
    x = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    t = torch.arange(batch, device=device) + 1
    fn = make_step(case, model, x, t)
    if isinstance(fn, str):
        return {"refused": fn}
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        peak = torch.cuda.max_memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = _proc_status_bytes("VmRSS")
        fn()
        peak = _proc_status_bytes("VmHWM")
    return {"peak_mib_per_image": (peak - before) / batch / 2**20, "steady_mib": before / 2**20}


def memory_cases(arch, args) -> dict:
    out = {}
    for case in CASES[arch]:
        cmd = [sys.executable, __file__, "--memory-child", f"{arch}:{case}", "--batch", str(args.batch),
               "--device", args.device]
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                          "MALLOC_MMAP_THRESHOLD_": "131072"})
        if res.returncode != 0:
            out[case] = {"error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
        else:
            out[case] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def table(results: dict) -> list[str]:
    lines = ["| model | step | median s/step | vs | ratio (target <= 1.2) | met | peak MiB/image |",
             "|---|---|---|---|---|---|---|"]
    for arch, cases in results["models"].items():
        for case, r in cases.items():
            mem = r.get("memory", {})
            peak = f"{mem['peak_mib_per_image']:.0f}" if "peak_mib_per_image" in mem else "-"
            if "refused" in r:
                lines.append(f"| {arch} | {case} | refused (ConfigError: not GAP+linear) | | | | - |")
                continue
            ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
            met = ("yes" if r["met"] else "**no**") if "met" in r else ""
            lines.append(f"| {arch} | {case} | {r['step_s']:.2f} | {r.get('baseline', '')} | {ratio} | "
                         f"{met} | {peak} |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="resnet50,vit_b_16")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "byom_step_cost"))
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        arch, case = args.memory_child.split(":")
        print(json.dumps(memory_child(arch, case, args.batch, args.device)))
        return 0
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = {"batch": args.batch, "repeats": args.repeats, "threads": args.threads,
               "device": args.device, "torch": torch.__version__, "models": {}}
    for arch in args.models.split(","):
        cases = time_cases(arch, args)
        if not args.no_memory:
            for case, mem in memory_cases(arch, args).items():
                cases[case]["memory"] = mem
        results["models"][arch] = cases
        print(json.dumps({arch: cases}, default=float), flush=True)
    results["seconds"] = time.perf_counter() - start
    if args.device.startswith("cuda"):
        machine = torch.cuda.get_device_name(0)
    else:
        machine = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared with other jobs)"
    results["machine"] = machine
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["## Bring your own model: attack step cost", "",
             f"Command: `python {' '.join(['benchmarks/byom_step_cost.py'] + sys.argv[1:])}`  ",
             (f"Machine: {machine}; torch {torch.__version__}; {args.threads} thread(s); device "
              f"`{args.device}`; batch {args.batch}; median of {args.repeats} timed steps per case after "
              f"one warm-up, round-robin over a model's cases; total {results['seconds']:.0f} s."), "",
             ("Random-weight torchvision models at 224 without a model card: the interpreters found "
              "their layers (ResNet-50: `net.layer4` + `net.fc`; ViT-B/16: Grad-CAM at the last "
              "block's `ln_1`, tokens reshaped to 14x14). A step = `logits_and_maps` with "
              "create_graph=True + CE + c * map distance + the gradient to x; `bare_fb` = CE forward "
              "+ backward to x; `bare_db` = a double backward to x (math attention kernel). Peak "
              "memory: a step's peak RSS above the steady state (model, input, interpreter, after "
              "one warm-up step) in a fresh process, per image."), "",
             *table(results)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
