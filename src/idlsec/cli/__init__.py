"""The ``idlsec`` command line: thin; each sub-command lives in its own module of this package.

The convention every command follows (copy it for a new one, e.g. ``idlsec robustness``):

* ``add_parser(subparsers, name)``: the flags, each with a strict ``type=`` from ``.common``
  (``POSITIVE``, ``NONNEGATIVE``, ``SEED``, ``POSITIVE_FLOAT``, ``float_in``, ``int_in``,
  ``parse_eps``), so nan, inf, 8/0, 0 images, negative rates and 20-digit seeds are usage errors.
* ``check(args)``: every other check that needs no model weights and no images, run by ``main``
  before ``run``: names (``check_model_data``), files read (``validation.check_input_path``),
  output paths (``check_out`` / ``validation.check_output_path``: creates nothing), the device
  (``check_runtime``), combinations of flags. It raises ``IdlsecError`` (usually ConfigError). It
  may leave what it built on ``args`` (e.g. ``args._job``) so that ``run`` uses that same object.
* ``run(args) -> int``: the work; files written at the end (reports through
  ``validation.write_text_atomic``).

Every failure prints ``error: <message>`` on stderr and returns 2, argparse's usage errors
included; a refused command writes nothing. ``idlsec info | head`` ends quietly."""

from __future__ import annotations

import argparse
import functools
import importlib
import os
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


class Parser(argparse.ArgumentParser):
    """Usage errors as ``error: <message>`` (then a pointer to --help) and exit code 2."""

    def error(self, message):
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _no_check(args) -> None:
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="idlsec", description="Attacks and defenses for interpretable "
                    "deep learning systems (classifier + interpreter).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"{__name__}.{module}")
        mod.add_parser(sub, name).set_defaults(_module=mod.__name__)
    return parser


@functools.lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    return build_parser()  # parse_args does not change it: one per process


def _quiet_stdout() -> None:
    """The reader of stdout left (``idlsec info | head``): send the rest to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        mod = importlib.import_module(args._module)  # looked up now: tests may replace run
        getattr(mod, "check", _no_check)(args)
        return int(mod.run(args) or 0)
    except IdlsecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
