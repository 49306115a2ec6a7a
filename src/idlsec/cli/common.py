"""Argument helpers shared by sub-commands."""

from __future__ import annotations

import argparse
import json


def add_device(p: argparse.ArgumentParser):
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")


def device_of(args) -> str:
    from ..runtime import default_device

    return getattr(args, "device", None) or default_device()


# --- the shared argument groups: a flag means the same thing in every command ------------
def _ints(n: int | tuple, what: str):
    counts = (n,) if isinstance(n, int) else n

    def parse(text: str) -> tuple:
        try:
            values = tuple(int(t) for t in text.replace("x", ",").split(",") if t.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: expected integers, got {text!r}") from None
        if len(values) not in counts or min(values) < 1:
            n_text = " or ".join(map(str, counts))
            raise argparse.ArgumentTypeError(
                f"{what}: expected {n_text} positive integers separated by commas, got {text!r}")
        return values

    return parse


def _floats(text: str) -> tuple:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}") from None


MODEL_SPEC_HELP = ("zoo name, torchvision:<arch>, timm:<name>, path/to/file.py:factory or "
                   "package.module:factory")


def add_model_args(p: argparse.ArgumentParser, *, required: bool = True,
                   default: str | None = None):
    """--model SPEC --weights PATH|random --num-classes N --input-size C,H,W --mean --std
    --labels FILE|imagenet."""
    g = p.add_argument_group("model")
    g.add_argument("--model", required=required and default is None, default=default,
                   metavar="SPEC",
                   help=MODEL_SPEC_HELP + (f" (default {default})" if default else ""))
    g.add_argument("--weights", default=None, metavar="PATH|random",
                   help="weights file, or 'random'")
    g.add_argument("--num-classes", type=int, default=None, metavar="N",
                   help="user model: number of classes")
    g.add_argument("--input-size", type=_ints(3, "--input-size"), default=None, metavar="C,H,W",
                   help="user model: input size")
    g.add_argument("--mean", type=_floats, default=None, metavar="a,b,c",
                   help="user model: normalisation mean")
    g.add_argument("--std", type=_floats, default=None, metavar="a,b,c",
                   help="user model: normalisation std")
    g.add_argument("--labels", default=None, metavar="FILE|imagenet",
                   help="user model: class names")
    return g


def model_options(args) -> dict:
    """The load_model keywords the user set (num_classes, input_size, mean, std, labels)."""
    keys = ("num_classes", "input_size", "mean", "std", "labels")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def add_data_args(p: argparse.ArgumentParser, *, required: bool = True,
                  help_default: str | None = None, split: bool = True, selection: bool = True):
    """--dataset SPEC --split --size H,W --image-labels subfolders|none|FILE.csv --all-images
    (``split``/``selection`` False: a command that reads fixed splits / every image omits them)."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=required, default=None, metavar="SPEC",
                   help="cifar10 | fashion-mnist | folder:DIR"
                   + (f" (default: {help_default})" if help_default else ""))
    if split:
        g.add_argument("--split", default="test", choices=["test", "val", "train"],
                       help="val: 5,000 training images set aside for tuning (docs/protocol.md)")
    g.add_argument("--size", type=_ints((1, 2), "--size"), default=None, metavar="H,W",
                   help="folder datasets: resize images to H,W")
    g.add_argument("--image-labels", default=None, metavar="subfolders|none|FILE.csv",
                   help="folder datasets: where labels come from (default: sub-folder names)")
    if selection:
        g.add_argument("--all-images", action="store_true",
                       help="keep misclassified images too (default: correctly classified ones)")
    return g


def dataset_options(args) -> dict:
    """The load_dataset keywords the user set (size, image_labels)."""
    out = {}
    if getattr(args, "size", None) is not None:
        out["size"] = args.size * 2 if len(args.size) == 1 else args.size
    if getattr(args, "image_labels", None) is not None:
        out["image_labels"] = args.image_labels
    return out


def add_runtime_args(p: argparse.ArgumentParser, *, seed: bool = True):
    """--device --threads N [--seed]."""
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default=None,
                   help="cpu | cuda | cuda:N (default: cuda if available)")
    g.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads")
    if seed:
        g.add_argument("--seed", type=int, default=0,
                       help="seed of the image choice and the attack (default 0)")
    return g


def runtime_of(args) -> str:
    """Apply --threads and return the device."""
    from ..runtime import set_threads

    set_threads(getattr(args, "threads", None))
    return device_of(args)


def load_model_from(args, device: str):
    """``--model`` and its options through ``load_model`` (options only when set)."""
    from ..models import load_model

    return load_model(args.model, weights=args.weights, device=device, **model_options(args))


def print_selection(report: dict, *, json_mode: bool = False) -> None:
    """The one line saying how many images qualified and why the others did not (stderr when
    stdout carries JSON)."""
    import sys

    from ..data import selection_message

    print(f"images: {selection_message(report)}", file=sys.stderr if json_mode else sys.stdout,
          flush=True)


def parse_eps(text: str) -> float:
    """Accept 0.031 or 8/255."""
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            return float(a) / float(b)
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def print_table(summary: dict, keys=None) -> None:
    """A two-column table of the scalar entries of a summary."""
    rows = [(k, v) for k, v in summary.items() if (keys is None or k in keys) and isinstance(v, (int, float))]
    width = max((len(k) for k, _ in rows), default=0)
    print(f"{'metric'.ljust(width)}  value")
    print(f"{'-' * width}  -----")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v:.4f}" if isinstance(v, float) else f"{k.ljust(width)}  {v}")
