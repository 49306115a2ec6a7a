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
def int_in(lo: int, hi: int | None = None):
    """argparse type: an integer in [lo, hi] (strict: no 1e3, no overflow past hi)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            span = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False,
             open_hi: bool = False):
    """argparse type: a finite number in the interval (bounds open or closed)."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad = not math.isfinite(value) or (lo is not None and (value <= lo if open_lo else value < lo)) \
            or (hi is not None and (value >= hi if open_hi else value > hi))
        if bad:
            span = f"{'(' if open_lo else '['}{'-inf' if lo is None else lo}, " \
                   f"{'inf' if hi is None else hi}{')' if open_hi or hi is None else ']'}"
            raise argparse.ArgumentTypeError(f"expected a finite number in {span}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


POSITIVE = int_in(1)           # counts: --n, --batch-size, --epochs, --threads
NONNEGATIVE = int_in(0)
SEED = int_in(0, 2**32 - 1)    # every seed consumer (torch, numpy) accepts these
POSITIVE_FLOAT = float_in(0, open_lo=True)
NONNEGATIVE_FLOAT = float_in(0)


def check_runtime(args) -> None:
    """--device (valid and present here); the counts are checked by their parsers."""
    from ..validation import check_device

    if getattr(args, "device", None) is not None:
        check_device(args.device)


def check_out(args, *, kind: str = "dir", attr: str = "out", flag: str = "--out") -> None:
    """The output path (when given) can be written; creates nothing."""
    from ..validation import check_output_path

    value = getattr(args, attr, None)
    if value is not None:
        check_output_path(value, what=flag, kind=kind)


def check_model_data(args, *, dataset: bool = True) -> None:
    """--model (and its options) and --dataset name something that exists, and fit each other."""
    from ..errors import ConfigError
    from ..spec import model_card

    card = model_card(args.model, **model_options(args))
    if getattr(args, "weights", None) not in (None, "random"):
        from ..validation import check_input_path

        check_input_path(args.weights, what="--weights")
    name = getattr(args, "dataset", None) if dataset else None
    if name is None:
        return
    if name.startswith("folder:"):
        from ..validation import check_input_path

        check_input_path(name[len("folder:"):], what="--dataset folder", kind="dir")
        return
    from ..data import DATASETS
    from ..errors import unknown_name

    if name not in DATASETS:
        raise unknown_name("dataset", name, list(DATASETS) + ["folder:<path>"])
    if card.dataset and name != card.dataset:
        raise ConfigError(f"model {args.model} is trained on {card.dataset}, not {name}")


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
    g.add_argument("--num-classes", type=POSITIVE, default=None, metavar="N",
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
    g.add_argument("--threads", type=POSITIVE, default=None, metavar="N", help="torch CPU threads")
    if seed:
        g.add_argument("--seed", type=SEED, default=0,
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
    """Accept 0.031 or 8/255: a finite number in [0, 1] (pixel units)."""
    import math

    try:
        if "/" in text:
            a, b = text.split("/", 1)
            value = float(a) / float(b)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a budget in [0, 1] pixel units (0.031 or 8/255), got {text!r}")
    return value


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
