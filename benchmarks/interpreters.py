"""Interpreter throughput against the peers, and the quality of the packaged RTS masking models.

    python benchmarks/interpreters.py [--device cuda] [--repeats R] [--n-quality N] [--out FILE]

Throughput, in maps per second (batch / median seconds per call, after warm-up), side by side in
one run on the same inputs: our Grad-CAM vs pytorch-grad-cam's GradCAM and Captum's LayerGradCam
(all at the model card's Grad-CAM layer), and our Grad (paper form) vs Captum's Saliency, on
cifar10-resnet20 at batch 64 and torchvision:resnet50 (random weights) at 224, batch 8.
Targets: ours >= 2x pytorch-grad-cam and >= 1x Captum.

RTS quality on the CIFAR-10 test split (``idlsec.train.rts.rts_quality``): the classifier's
accuracy on images where only the mask is kept (the rest blurred), relative to its clean accuracy
(target >= 0.80), and the mean mask area (target <= 0.35).

Writes ``benchmarks/results/interpreters.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from idlsec.runtime import cpu_name
from idlsec.runtime import sync as _sync

ROOT = Path(__file__).resolve().parents[1]


def time_interleaved(fns: dict, device, repeats, warmup=2) -> dict:
    """Median seconds per call of each function, timed round-robin (one call of each per round) so
    that the load of a shared machine affects every method alike."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            _sync(device)
            t = time.perf_counter()
            f()
            _sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def throughput_rows(name, batch, device, repeats):
    from captum.attr import LayerGradCam, Saliency
    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from idlsec.interpreters import Grad, GradCAM
    from idlsec.models import get_layer, load_model

    weights = "random" if name.startswith("torchvision:") else None
    model = load_model(name, weights=weights, device=device)
    c, h, w = model.card.input_size
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, c, h, w, generator=gen).to(device)
    with torch.no_grad():
        target = model(x).argmax(1)
    layer = get_layer(model, model.card.gradcam_layer)

    ours_gc = GradCAM(model)
    ours_up = GradCAM(model, upsample=True)
    ours_grad = Grad(model, form="paper")
    pgc = PGCGradCAM(model=model, target_layers=[layer])
    pgc_targets = [ClassifierOutputTarget(int(t)) for t in target]
    cap_gc = LayerGradCam(model, layer)
    cap_sal = Saliency(model)

    def run_pgc():
        # the zoo model's weights are frozen: their backward needs an input that requires grad
        return pgc(x.clone().requires_grad_(), targets=pgc_targets)

    timings = time_interleaved({
        "gradcam/ours": lambda: ours_gc(x, target),
        "gradcam/ours (upsampled)": lambda: ours_up(x, target),
        "gradcam/pytorch-grad-cam": run_pgc,
        "gradcam/captum LayerGradCam": lambda: cap_gc.attribute(x, target=target, relu_attributions=True),
        "grad/ours": lambda: ours_grad(x, target),
        "grad/captum Saliency": lambda: cap_sal.attribute(x, target=target, abs=True),
    }, device, repeats)
    pgc.activations_and_grads.release()  # their hooks
    rate = {k: batch / v for k, v in timings.items()}
    rows = [(name, batch, k, rate[k]) for k in timings]
    ratios = {
        "Grad-CAM ours / pytorch-grad-cam": (rate["gradcam/ours"] / rate["gradcam/pytorch-grad-cam"], 2.0),
        "Grad-CAM ours (upsampled) / pytorch-grad-cam": (
            rate["gradcam/ours (upsampled)"] / rate["gradcam/pytorch-grad-cam"], 2.0),
        "Grad-CAM ours / Captum LayerGradCam": (rate["gradcam/ours"] / rate["gradcam/captum LayerGradCam"], 1.0),
        "Grad ours / Captum Saliency": (rate["grad/ours"] / rate["grad/captum Saliency"], 1.0),
    }
    return rows, {(name, k): v for k, v in ratios.items()}


def rts_rows(device, n, rts_dir=None):
    from idlsec.data import load_dataset
    from idlsec.errors import IdlsecError
    from idlsec.interpreters import RTS
    from idlsec.models import load_model
    from idlsec.train.rts import rts_quality

    test = load_dataset("cifar10", "test")
    rows = []
    for name in ["cifar10-resnet20", "cifar10-resnet56"]:
        model = load_model(name, device=device)
        try:
            weights = None
            if rts_dir is not None:
                from idlsec.interpreters.rts import verify_packaged

                weights = Path(rts_dir) / f"rts-{name}.safetensors"
                verify_packaged(weights)
            rts = RTS(model, weights=weights)
        except IdlsecError as e:
            rows.append((name, None, str(e)))
            continue
        q = rts_quality(rts.net, model, test, n=n, device=device, seed=0)
        rows.append((name, q, None))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on cpu)")
    ap.add_argument("--n-quality", type=int, default=10000, help="CIFAR-10 test images for the RTS figures")
    ap.add_argument("--skip-resnet50", action="store_true")
    ap.add_argument("--rts-dir", default=None, help="read rts-<model>.safetensors (+ .json) from here "
                    "instead of the packaged weights")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/interpreters.md"))
    args = ap.parse_args(argv)
    threads = args.threads or (1 if args.device == "cpu" else torch.get_num_threads())
    torch.set_num_threads(threads)
    os.environ.setdefault("IDLSEC_MIRROR", str(ROOT.parent / "shared"))

    t0 = time.perf_counter()
    rows, ratios = throughput_rows("cifar10-resnet20", 64, args.device, 4 * args.repeats)
    if not args.skip_resnet50:
        r, q = throughput_rows("torchvision:resnet50", 8, args.device, args.repeats)
        rows += r
        ratios.update(q)
    rts = rts_rows(args.device, args.n_quality, args.rts_dir)
    seconds = time.perf_counter() - t0

    if args.device.startswith("cuda"):
        machine = torch.cuda.get_device_name(0)
    else:
        machine = f"CPU ({cpu_name()}, {os.cpu_count()} cores, shared with other jobs)"
    lines = ["## Interpreters: throughput against the peers, RTS quality", "",
             f"Command: `python {' '.join(['benchmarks/interpreters.py'] + sys.argv[1:])}`  ",
             (f"Machine: {machine}; torch {torch.__version__}; {threads} thread(s); device `{args.device}`; "
             f"median of {4 * args.repeats} (resnet20) / {args.repeats} (resnet50) timed calls per method, "
              f"round-robin over the methods, after 2 warm-up calls each; total {seconds:.0f} s."), "",
             ("Maps per second (higher is better). Ours: native resolution, min-max normalised maps as "
             "torch tensors on the device; pytorch-grad-cam: its default output (min-max normalised NumPy "
             "maps resized to the input with cv2); Captum: raw attributions (no normalisation)."), "",
             "| model | batch | method | maps/s |", "|---|---|---|---|"]
    lines += [f"| {m} | {b} | {k} | {v:.1f} |" for m, b, k, v in rows]
    lines += ["", "| model | ratio | measured | target | met |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {k} | {v:.2f}x | >= {t:g}x | {'yes' if v >= t else '**no**'} |"
              for (m, k), (v, t) in ratios.items()]
    lines += ["", ("Ours and Captum do the same work (one forward pass, one backward pass to the layer or the "
                   "input; ours also validates the input and min-max normalises), so ratios near 1x are parity "
                   "within the noise of the machine; pytorch-grad-cam back-propagates to the input and converts "
                   "to NumPy and cv2 per image.")]
    lines += ["", (f"RTS masking models on the CIFAR-10 test split ({args.n_quality} seeded images; mask for the "
              "true class; the rest of the image blurred with sigma 2.0); weights: "
              f"{args.rts_dir or 'packaged (src/idlsec/models/weights/)'}."), "",
              ("| classifier | clean acc. | acc. on preserved region | kept (target >= 0.80) | mean mask area "
              "(target <= 0.35) | acc. with the mask region blurred | met |"), "|---|---|---|---|---|---|---|"]
    for name, q, err in rts:
        if q is None:
            lines.append(f"| {name} | - | - | - | - | - | not available: {err} |")
            continue
        met = q["accuracy_kept"] >= 0.8 and q["mean_mask_area"] <= 0.35
        lines.append(f"| {name} | {q['clean_accuracy']:.3f} | {q['preserved_accuracy']:.3f} | "
                     f"{q['accuracy_kept']:.3f} | {q['mean_mask_area']:.3f} | {q['destroyed_accuracy']:.3f} | "
                     f"{'yes' if met else '**no**'} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
