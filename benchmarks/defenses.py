"""Defenses benchmark -> benchmarks/results/defenses.md (and defenses.json beside it).

1. Detection on CIFAR-10 / cifar10-resnet20: TPR at 5% FPR and AUROC of the ensemble detector
   (logistic combination of squeezer, interpreter, confidence and hidden-layer features), of its
   map-disagreement feature alone, and of feature squeezing (5-bit, 3x3 median: the issue's
   reference), against PGD, ADV^2, AdvEdge, AdvEdge+ and QuScore, in two protocols ("unseen":
   trained on PGD + ADV^2; "seen": trained on the train half of every attack), and against
   adaptive ADV^2/AdvEdge+ that descend the detector's score (``bench.detection``).
2. Adversarial training: clean accuracy, PGD-10 robust accuracy, and ASR / map IoU of PGD and
   ADV^2 on cifar10-resnet20 vs cifar10-resnet20-robust, plus the input transforms, transfer
   and adaptive (``bench.defense``).

The tables are rewritten after every row, so a run stopped by ``--time-cap`` (no new attack or
defense starts past it) or killed keeps what it measured.

    python benchmarks/defenses.py --cache-dir runs/detcache     # CPU-sized (minutes with the cache)
    python benchmarks/defenses.py --full --device cuda --out-dir $OUT/defenses --time-cap 240
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from idlsec.bench.defense import DefenseJob, run_defense_job
from idlsec.bench.detection import DetectionJob, run_detection_job
from idlsec.data import load_dataset
from idlsec.defenses.adversarial_training import robust_accuracy
from idlsec.models import load_model
from idlsec.runtime import cpu_name
from idlsec.train.evaluate import model_accuracy

SIZES = {
    # CPU: the attacks' step counts reduced (stated in the output); 128 attacked images per half as the issue asks
    "cpu": {"n": 128, "n_benign": 300, "warmup_steps": 50, "steps": 150, "quscore_queries": 500, "adaptive_n": 32,
            "adaptive_steps": 50, "defend_n": 16, "clean_n": 1000, "robust_n": 200, "batch_size": 32},
    # GPU, ~5 minutes: 100 + 400 IDLS steps (issue 4's reference configuration; the defaults 300 + 1000
    # take ~0.42 s/image on a shared H200, i.e. over 5 minutes for the 768 IDLS examples alone)
    "full": {"n": 128, "n_benign": 500, "warmup_steps": 100, "steps": 400, "quscore_queries": 1000,
             "adaptive_n": 64, "adaptive_steps": 100, "defend_n": 100, "clean_n": 10_000, "robust_n": 1000,
             "batch_size": 256},
}
IDLS = ("adv2", "advedge", "advedge+", "quscore")  # the attacks the >= 0.90 target is about


def machine(device: str) -> str:
    return torch.cuda.get_device_name(0) if device.startswith("cuda") else cpu_name()


def fmt(v, digits=2):
    if v is None or (isinstance(v, float) and v != v):  # None or NaN (no map: QuScore's oracle)
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="the issue's sizes (GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--interpreters", default="cam,gradcam,grad")
    ap.add_argument("--attacks", default="pgd,pgd-weak,adv2,advedge,advedge+,quscore")
    ap.add_argument("--adaptive-attacks", default="adv2,advedge+")
    ap.add_argument("--skip-detection", action="store_true")
    ap.add_argument("--skip-defense", action="store_true")
    ap.add_argument("--cache-dir", default=None,
                    help="reuse/save the crafted non-adaptive adversarial sets here (same sizes and seed)")
    ap.add_argument("--time-cap", type=float, default=None,
                    help="seconds: past it no new attack or defense starts (the detection part gets 75%%)")
    ap.add_argument("--robust-weights", default=None,
                    help="weights for cifar10-resnet20-robust (default: the packaged file; its JSON card beside it)")
    ap.add_argument("--detection-json", default=None,
                    help="reuse the detection results of an earlier run's defenses.json (same sizes)")
    ap.add_argument("--defense-json", default=None,
                    help="reuse the adversarial-training/transform results of an earlier run's defenses.json")
    ap.add_argument("--size", action="append", default=[], metavar="KEY=VALUE",
                    help="override one size (JSON value), e.g. --size n=8 (smoke tests)")
    ap.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    size = dict(SIZES["full" if args.full else "cpu"])
    for item in args.size:
        key, _, value = item.partition("=")
        if key not in size:
            ap.error(f"--size: unknown key {key!r}; valid: {', '.join(size)}")
        size[key] = json.loads(value)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = {"sizes": size, "device": args.device}
    header = ["## Defenses: detection and adversarial training (CIFAR-10, cifar10-resnet20)", "",
              f"Command: `python benchmarks/defenses.py {' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip()
              + "  ",
              f"Machine: {machine(args.device)}; torch {torch.__version__}; {torch.get_num_threads()} thread(s).  ",
              f"Sizes: {json.dumps(size)} ("
              + ("the IDLS attacks run their default steps, 300 warm-up + 1000 joint"
                 if size["warmup_steps"] is None and size["steps"] is None else
                 f"the IDLS attacks run {size['warmup_steps']} warm-up + {size['steps']} joint steps instead of "
                 "their defaults 300 + 1000")
              + ("" if args.full else "; `benchmarks/gpu/bench/defenses.sh` runs `--full`") + ").", ""]
    sections: dict[str, list[str]] = {}

    def write(final=False):
        total = time.perf_counter() - start
        lines = header + sections.get("detection", []) + sections.get("defense", [])
        lines += [f"Total wall time: {total:.0f} s" + ("." if final else " (run in progress or stopped: "
                                                         "the rows above are those finished)."), ""]
        (out_dir / "defenses.md").write_text("\n".join(lines))
        (out_dir / "defenses.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        return lines

    cap = args.time_cap
    if not args.skip_detection:
        attacks = tuple(a for a in args.attacks.split(",") if a)
        adaptive = tuple(a for a in args.adaptive_attacks.split(",") if a)
        job = DetectionJob(interpreters=tuple(args.interpreters.split(",")), attacks=attacks,
                           train_attacks=tuple(a for a in ("pgd", "pgd-weak", "adv2") if a in attacks), n=size["n"],
                           n_benign=size["n_benign"], steps=size["steps"], warmup_steps=size["warmup_steps"],
                           quscore_queries=size["quscore_queries"], adaptive=bool(adaptive),
                           adaptive_n=size["adaptive_n"], adaptive_steps=size["adaptive_steps"],
                           adaptive_attacks=adaptive, batch_size=size["batch_size"], seen_detector=True,
                           device=args.device, cache_dir=args.cache_dir,
                           time_cap=None if cap is None else 0.75 * cap)

        def on_rows(out):
            results["detection"] = out
            sections["detection"] = detection_section(out, size, args)
            write()

        if args.detection_json:
            on_rows(json.loads(Path(args.detection_json).read_text())["detection"])
        else:
            on_rows(run_detection_job(job, log=lambda m: print(m, flush=True), on_rows=on_rows))
    if not args.skip_defense:
        reuse = json.loads(Path(args.defense_json).read_text())["defense"] if args.defense_json else None
        left = None if cap is None else max(0.0, cap - (time.perf_counter() - start))
        sections["defense"] = defense_section(size, args.device, results, reuse, args.robust_weights, left,
                                              lambda lines: (sections.__setitem__("defense", lines), write()))
    print("\n".join(write(final=True)))


def detection_section(out, size, args):
    lines = ["### Detection at 5% FPR", "",
             (f"Ensemble interpreters: {args.interpreters}; its squeezers: 5- and 4-bit depth, 2x2 and 3x3 median; "
              f"hidden features: the GAP output of every residual block. Benign: three disjoint sets of "
              f"{size['n_benign']} test images: one fits the combinations (and the Mahalanobis class statistics), "
              f"one calibrates every threshold at 5% FPR, one gives the AUROC, the TPR@5%FPR and the FPR "
              f"measured at the calibrated threshold. Attacked: {size['n']} correctly classified test images "
              f"per half (train/test), eps 8/255, IDLS attacks target CAM with a random target class, "
              f"PGD-10, `pgd-weak` (PGD with eps 2/255 and two 1/255 steps: near-boundary examples a defender "
              f"can make cheaply) and QuScore (resnet32 surrogate) untargeted. `ensemble` (protocol "
              f"*unseen*): the logistic combination trained on PGD, pgd-weak and ADV^2 examples of the train "
              f"half only, so AdvEdge, AdvEdge+ and QuScore are unseen attacks; `ensemble-seen` (protocol *seen*): trained on the "
              f"train half of every attack (known attack families, held-out images). `squeeze`: feature "
              f"squeezing, 5-bit + 3x3 median, L1 of the softmax change (the issue's reference); "
              f"`disagreement`: the mean pairwise map disagreement alone (the issue's minimal baseline). "
              f"Only successful adversarial examples count (n adv). Adaptive rows: {size['adaptive_n']} test "
              f"images, the attack descends the named detector's calibrated score and keeps every ensemble "
              f"interpreter's map, {size['adaptive_steps']} joint steps. Wall time {out['seconds']:.0f} s"
              + (" (the crafted non-adaptive sets came from the `--cache-dir` cache, built by this code "
                 "with the same sizes and seed)" if args.cache_dir else "") + "."), "",
             "| attack | detector | trained on | ASR | IoU (CAM) | n adv | TPR@5%FPR | AUROC | TPR at calibrated thr. | FPR at calibrated thr. |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        if "auroc" not in r:
            lines.append(f"| {r['attack']} | - | - | {fmt(r['asr'])} | - | 0 | - | - | - | - |")
            continue
        trained = "-" if r["detector"] in ("squeeze", "disagreement") else ("yes" if r["trained_on"] else "no")
        lines.append(f"| {r['attack']} | {r['detector']} | {trained} | {fmt(r['asr'])} | "
                     f"{fmt(r['iou'])} | {r['n_adversarial']} | {fmt(r['tpr_at_fpr'])} | {fmt(r['auroc'], 3)} | "
                     f"{fmt(r.get('tpr_at_threshold'))} | {fmt(r.get('fpr_at_threshold'))} |")
    rows = [r for r in out["rows"] if "tpr_at_fpr" in r]
    for dname in ("ensemble", "ensemble-seen", "squeeze"):
        vals = {r["attack"]: r["tpr_at_fpr"] for r in rows if r["detector"] == dname and r["attack"] in IDLS}
        if vals:
            worst = min(vals.values())
            lines += ["", f"Target check ({dname}): TPR@5%FPR against the non-adaptive IDLS attacks "
                      + ", ".join(f"{a} {v:.2f}" for a, v in vals.items())
                      + f"; the target >= 0.90 is {'met' if worst >= 0.9 else f'missed (worst {worst:.2f})'}."]
        ada = {r["attack"]: r["tpr_at_fpr"] for r in rows if r["detector"] == dname and r["adaptive"]}
        if ada:
            lines += ["", f"Adaptive ({dname}): TPR@5%FPR " + ", ".join(f"{a} {v:.2f}" for a, v in ada.items())
                      + "."]
    if out.get("skipped"):
        lines += ["", "Not run (time cap): " + ", ".join(out["skipped"]) + "."]
    for key, label in (("coefficients", "ensemble"), ("coefficients_seen", "ensemble-seen")):
        coef = sorted(out.get(key, {}).items(), key=lambda kv: -abs(kv[1]))[:6]
        if coef:
            lines += ["", f"Largest logistic weights, {label} (standardised features): "
                      + ", ".join(f"`{k}` {v:+.2f}" for k, v in coef) + "."]
    return lines + [""]


def defense_section(size, device, results, reuse=None, robust_weights=None, time_left=None, update=None):
    start = time.perf_counter()
    lines = ["### Adversarial training and input transforms", ""]
    test = load_dataset("cifar10", "test")
    rows = [] if reuse is None else [tuple(r) for r in reuse["models"]]
    for name in ("cifar10-resnet20", "cifar10-resnet20-robust") if reuse is None else ():
        m = load_model(name, weights=robust_weights if name.endswith("-robust") else None, device=device)
        clean = model_accuracy(m, test, n=size["clean_n"], device=device)
        x, y = test.get(test.sample(size["robust_n"]))
        rob = robust_accuracy(m, x.to(device), y.to(device))
        rows.append((name, clean, rob["robust_accuracy"]))
    weights = Path(robust_weights) if robust_weights else ROOT / "src/idlsec/models/weights/cifar10-resnet20-robust.safetensors"
    card = json.loads(weights.with_suffix(".json").read_text())
    lines += [(f"cifar10-resnet20-robust: `{card.get('command')}` (seed {card.get('seed')}, "
              f"{card.get('train_seconds')} s on {card.get('device')})."), "",
              (f"| model | clean accuracy ({size['clean_n']} seeded random test images) | PGD-10 accuracy, "
              f"eps 8/255 ({size['robust_n']} seeded random) |"), "|---|---|---|"]
    lines += [f"| {n} | {c:.3f} | {r:.3f} |" for n, c, r in rows]
    results["defense"] = {"models": rows}
    if update is not None:
        update(lines + [""])
    cap = None if time_left is None else max(1.0, time_left - (time.perf_counter() - start))
    job = DefenseJob(defenses=("none", "model:cifar10-resnet20-robust", "median", "bitdepth", "jpeg", "rp"),
                     attacks=("pgd", "adv2"), n=size["defend_n"], steps=size["steps"],
                     warmup_steps=size["warmup_steps"], batch_size=size["batch_size"], device=device,
                     model_weights={"cifar10-resnet20-robust": robust_weights} if robust_weights else {},
                     time_cap=cap)
    out = reuse if reuse is not None else run_defense_job(job, log=lambda m: print(m, flush=True))
    results["defense"] = {"models": rows, **out}
    lines += ["", (f"Attacks on {size['defend_n']} correctly classified test images (of the standard model), CAM "
              "maps; ADV^2 targeted (random target), PGD-10 untargeted. `transfer`: examples crafted on the "
              "standard model fed to the defended system; `adaptive`: crafted through the transform (BPDA for "
              "JPEG and bit depth, a fresh random draw per step = EOT for rp). IoU: mean top-k IoU of the "
              "defended system's adversarial vs benign CAM, over successful examples. "
              f"Wall time {out['seconds']:.0f} s."), "",
              "| defense | attack | mode | clean acc. | ASR | acc. under attack | map IoU |", "|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        lines.append(f"| {r['defense']} | {r['attack']} | {r['mode']} | {fmt(r['clean_accuracy'])} | "
                     f"{fmt(r['asr'])} | {fmt(r['accuracy_under_attack'])} | {fmt(r['iou'])} |")
    if out.get("skipped"):
        lines += ["", "Not run (time cap): " + ", ".join(out["skipped"]) + "."]
    lines.append("")
    return lines


if __name__ == "__main__":
    main()
