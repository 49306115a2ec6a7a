"""The ``idlsec`` command line: thin; each sub-command lives in its own module of this package
with ``add_parser(subparsers)`` and ``run(args) -> int``. Errors print ``error: <message>`` and
exit with code 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import IdlsecError

# sub-command name -> module in idlsec.cli
COMMANDS = {
    "info": "info",
    "eval": "evaluate",
    "attack": "attack",
    "train": "train",
    "train-rts": "train_rts",
    "explain": "explain",
    "detect": "detect",
    "defend": "defend",
    "bench": "bench",
    "report": "report",
    "serve": "serve",
    "universal": "universal",
    "robustness": "robustness",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idlsec", description="Attacks and defenses for interpretable "
                                     "deep learning systems (classifier + interpreter).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"{__name__}.{module}")
        p = mod.add_parser(sub, name)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except IdlsecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
