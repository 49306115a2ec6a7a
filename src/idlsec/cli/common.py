"""Argument helpers shared by sub-commands."""

from __future__ import annotations

import argparse
import json


def add_device(p: argparse.ArgumentParser):
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if available)")


def device_of(args) -> str:
    from ..bench.job import default_device

    return args.device or default_device()


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
