"""A hypothesis fuzz of every ``idlsec`` command: argv built from each command's own argparse flags
with junk and edge values. Whatever the argv: no traceback, exit code 0 or 2, ``error: `` first on
stderr when 2, and nothing written in the working folder (the checks create nothing; ``run`` is
replaced by a stub, so that an accepted argv does no work). Examples per command:
$IDLSEC_FUZZ_EXAMPLES (default 25: the whole file in ~15 s on one core)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import idlsec.cli as cli

EXAMPLES = int(os.environ.get("IDLSEC_FUZZ_EXAMPLES", "25"))

# an argv that passes every check, per command (junk is added to it or replaces parts of it)
BASE = {
    "info": [],
    "eval": ["--model", "cifar10-resnet20", "--dataset", "cifar10"],
    "attack": ["--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam", "--attack", "pgd",
               "--out", "o"],
    "train": ["--model", "fmnist-cnn", "--out", "w.safetensors"],
    "train-rts": ["--model", "cifar10-resnet20", "--out", "r.safetensors"],
    "explain": ["--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam", "--out", "o"],
    "detect": ["--out", "o"],
    "defend": ["--out", "o"],
    "bench": ["merge", "a", "--out", "o"],
    "report": ["run"],
    "robustness": ["--model", "cifar10-resnet20", "--out", "o"],
    "serve": ["--openapi", "-"],
    "universal": ["--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam", "--source", "0",
                  "--target", "1", "--out", "o"],
}
assert set(BASE) == set(cli.COMMANDS)

JUNK = ["", " ", "0", "-1", "1", "3", "nan", "inf", "-inf", "1e999", "1e-300", "8/0", "8/255", "0/0", "1/3",
        "12345678901234567890", "0x10", "x", "a,b,c", "3,32", "0,4", "afile", "afile/x", "/proc/x", "/sys/x/y",
        "..", ".", "bogus", "cuda", "cuda:7", "meta", "cpu", "foo=1", "=1", "steps=-1", "alpha=[1", "ø",
        "folder:nowhere", "torchvision:nope", "nope.py:f", "a\x00b", "--", "-", "0/1", "2/1", "merge"]


def _subparser(name):
    action = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


FLAGS = {name: [a for a in _subparser(name)._actions if a.option_strings and a.dest != "help"]
         for name in cli.COMMANDS}


@st.composite
def argvs(draw, command):
    base = list(BASE[command])
    if base and draw(st.booleans()):  # drop a slice of the valid argv
        i = draw(st.integers(0, len(base) - 1))
        del base[i:i + draw(st.integers(1, 2))]
    extra = []
    for action in draw(st.lists(st.sampled_from(FLAGS[command]), max_size=3)):
        flag = draw(st.sampled_from(action.option_strings))
        if action.nargs == 0:
            extra.append(flag)
            continue
        values = st.sampled_from(JUNK) | st.text(max_size=8)
        if action.choices:
            values = values | st.sampled_from(list(action.choices))
        extra += [flag, draw(values)]
    return base + extra if draw(st.booleans()) else extra + base


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root)
                  for f in files + dirs)


@contextlib.contextmanager
def scratch_folder():
    """A temporary current folder holding one file, ``afile`` (for paths under a file)."""
    with tempfile.TemporaryDirectory() as tmp:
        old = os.getcwd()
        os.chdir(tmp)
        try:
            with open("afile", "w") as f:
                f.write("x")
            yield tmp
        finally:
            os.chdir(old)


def check_argv(command, argv):
    with scratch_folder() as tmp:
        before = _tree(tmp)
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = cli.main([command, *argv])
        after = _tree(tmp)
    text = err.getvalue()
    assert rc in (0, 2), (argv, rc, text)
    assert "Traceback" not in text, (argv, text)
    if rc == 2:
        assert text.startswith("error: "), (argv, text)
    assert after == before, (argv, rc, sorted(set(after) - set(before)))
    return rc, text


@pytest.fixture
def stubbed(monkeypatch):
    """Each command's run() does nothing; serve's port probe is skipped (no listening socket)."""
    for module in set(cli.COMMANDS.values()):
        monkeypatch.setattr(importlib.import_module(f"idlsec.cli.{module}"), "run", lambda args: 0)
    monkeypatch.setattr(importlib.import_module("idlsec.cli.serve"), "_check_bind", lambda host, port: None)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_fuzz_command(command, stubbed):
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(argvs(command))
    def fuzz(argv):
        check_argv(command, argv)

    fuzz()


SWEEP = ["", "nan", "inf", "-1", "0", "8/0", "12345678901234567890", "afile/x", "/proc/x", "x", "bogus",
         "foo=1", "a\x00b", "1e999", "0,4"]


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_sweep_every_flag(command, stubbed):
    """Each flag of the command with each of the worst values, on the valid argv (one folder)."""
    with scratch_folder() as tmp:
        before = _tree(tmp)
        for action in FLAGS[command]:
            for value in ([None] if action.nargs == 0 else SWEEP):
                argv = [command, *BASE[command], action.option_strings[0]] + ([] if value is None else [value])
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    rc = cli.main(argv)
                text = err.getvalue()
                assert rc in (0, 2) and "Traceback" not in text, (argv, rc, text)
                assert rc == 0 or text.startswith("error: "), (argv, text)
                assert _tree(tmp) == before, (argv, rc)


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_base_argv_is_accepted(command, stubbed):
    """The fuzz starts from an argv that passes (so that junk, not a missing flag, is what fails)."""
    if command in ("bench", "report"):
        pytest.skip("needs a run folder")
    rc, err = check_argv(command, BASE[command])
    assert rc == 0, err
