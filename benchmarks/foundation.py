"""Foundation figures: clean accuracy of the zoo on its test split, PGD acceptance, and the
packaged weights' training cards. Writes benchmarks/results/foundation.md.

    python benchmarks/foundation.py [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from idlsec.attacks import PGD
from idlsec.bench.runner import machine_info
from idlsec.data import load_dataset, select_images
from idlsec.models import load_model
from idlsec.models.zoo import WEIGHTS_DIR
from idlsec.train.evaluate import model_accuracy

ROOT = Path(__file__).resolve().parents[1]


def weights_table() -> list[str]:
    rows = ["| weights | trained on | command | seconds | figures |", "|---|---|---|---|---|"]
    for card in sorted(WEIGHTS_DIR.glob("*.json")):
        d = json.loads(card.read_text())
        q = d.get("quality", {})
        if "accuracy_kept" in q:
            figures = (f"accuracy kept on the preserved region {q['accuracy_kept']:.3f}, mean mask area "
                       f"{q['mean_mask_area']:.3f} (test split, n = {q.get('n', 10000)})")
        elif "robust_accuracy" in d:
            figures = (f"clean {d['test_accuracy']:.4f} (n = {d['test_accuracy_n']}), {d['robust_attack']} "
                       f"accuracy {d['robust_accuracy']:.3f} (n = {d['robust_accuracy_n']})")
        else:
            figures = f"test accuracy {d['test_accuracy']:.4f}"
        where = d.get("machine") or d.get("device", "?")
        secs = d.get("seconds", d.get("train_seconds"))
        rows.append(f"| `{card.stem}` | {where} | `{d.get('command')}` | {secs} | {figures} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/foundation.md"))
    args = ap.parse_args()
    m = machine_info(args.device)
    cifar, fmnist = load_dataset("cifar10", "test"), load_dataset("fashion-mnist", "test")
    acc_rows = ["| model | test split | accuracy | target | seconds |", "|---|---|---|---|---|"]
    targets = {"cifar10-resnet20": "0.810 ± 0.005", "cifar10-resnet56": "0.832 ± 0.005", "fmnist-cnn": "≥ 0.90",
               "cifar10-vgg": "≥ 0.85", "cifar10-resnet32": "–", "cifar10-resnet44": "–",
               "cifar10-resnet20-robust": "–"}
    for name, ds in [("cifar10-resnet20", cifar), ("cifar10-resnet32", cifar), ("cifar10-resnet44", cifar),
                     ("cifar10-resnet56", cifar), ("cifar10-vgg", cifar), ("cifar10-resnet20-robust", cifar),
                     ("fmnist-cnn", fmnist)]:
        start = time.perf_counter()
        acc = model_accuracy(load_model(name, device=args.device), ds, device=args.device)
        acc_rows.append(f"| {name} | {ds.name} (10,000) | {acc:.4f} | {targets[name]} | "
                        f"{time.perf_counter() - start:.1f} |")
    model = load_model("cifar10-resnet20", device=args.device)
    sel = select_images(cifar, 64, seed=0, model=model, correct_only=True, device=args.device)
    x, y = sel.x.to(args.device), sel.y.to(args.device)
    start = time.perf_counter()
    res = PGD(model, eps=8 / 255, alpha=2 / 255, steps=10, seed=0).run(x, y)
    pgd = (f"| untargeted PGD, eps 8/255, alpha 2/255, 10 steps, random start | 64 correctly classified "
           f"test images (seed 0) | ASR {res.success.float().mean():.3f} (target ≥ 0.95) | max ‖δ‖∞ "
           f"{(res.x_adv - x).abs().max() * 255:.3f}/255 | {time.perf_counter() - start:.2f} s |")
    text = "\n".join([
        "## Foundation: the model zoo and the PGD baseline", "",
        f"Command: `python benchmarks/foundation.py --device {args.device}`  ",
        f"Machine: {m['cpu']}, {m['cpus']} cores, torch {m['torch']}, {m['threads']} thread(s)"
        + (f", GPU {m['gpu']}" if "gpu" in m else "") + ".", "",
        "Clean accuracy on the full test split (CIFAR-10: the JPEG export of the local mirror):", "",
        *acc_rows, "", "| attack | images | result | bound | seconds |", "|---|---|---|---|---|", pgd, "",
        "Packaged weights and their training cards (`src/idlsec/models/weights/*.json`, figures measured by "
        "the training command on the machine named):", "", *weights_table(), ""])
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
