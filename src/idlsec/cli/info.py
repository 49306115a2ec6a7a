"""``idlsec info``: what is registered (zoo models, the model-spec grammar, datasets, interpreters,
attacks). ``idlsec info | head`` ends quietly (no BrokenPipeError traceback)."""

from __future__ import annotations

import os
import sys
import textwrap


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="list models (and how to bring your own), datasets, interpreters, attacks, detectors and monitors"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def run(args):
    try:
        _print(args)
        sys.stdout.flush()
    except BrokenPipeError:  # `idlsec info | head`: the reader left; stop writing, quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
    return 0


def _print(args):
    from .. import registry_info
    from .common import print_json

    info = registry_info()
    if args.json:
        print_json(info)
        return
    for line in model_lines():
        print(line)
    for k, v in info.items():
        if k != "models":
            print(f"{k}: {', '.join(v)}")


def model_lines() -> list[str]:
    """The zoo as a table, then the spec forms for any other model."""
    from ..models import CARDS

    lines = ["models (zoo): --model NAME, load_model(NAME)"]
    width = max(len(n) for n in CARDS)
    for name in sorted(CARDS):
        c = CARDS[name]
        size = "x".join(map(str, c.input_size))
        acc = f"acc {c.accuracy:.3f}" if c.accuracy is not None else ""
        lines.append(
            f"  {name.ljust(width)}  {str(c.dataset or '-'):<13} {size:<9} "
            f"{c.num_classes:>4} classes  {acc}".rstrip()
        )
    tv, timm = _torchvision_names(), _timm_count()
    lines += [
        "any other model: --model SPEC, load_model(SPEC) (see docs/byom.md)",
        "  torchvision:<arch>       "
        + (
            f"{len(tv)} classification models, e.g. torchvision:resnet50, torchvision:vit_b_16"
            if tv
            else "needs pip install 'idlsec[torchvision]'"
        ),
        "  timm:<name>              "
        + (
            f"{timm} models, e.g. timm:deit_small_patch16_224"
            if timm
            else "needs pip install 'idlsec[timm]'"
        ),
        "  path/to/file.py:factory  a function or class in your file that returns an nn.Module",
        "  package.module:factory   the same from an importable module",
        "  options: --weights PATH|random (.safetensors or a state dict; never pickled code)",
        "           --num-classes N --input-size C,H,W --mean a,b,c --std a,b,c "
        "--labels FILE|imagenet",
    ]
    if tv:
        wrapped = textwrap.wrap(
            ", ".join(tv), width=96, initial_indent="    ", subsequent_indent="    "
        )
        lines += ["  torchvision archs:"] + wrapped
    return lines


def _torchvision_names() -> list[str]:
    try:
        import torchvision.models as tvm
    except ImportError:
        return []
    return tvm.list_models(module=tvm)


def _timm_count() -> int:
    try:
        import timm
    except ImportError:
        return 0
    return len(timm.list_models())
