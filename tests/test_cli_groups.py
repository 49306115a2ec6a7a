"""The shared CLI argument groups: every command that takes a model, a dataset or runtime options
takes the same flags, parsed the same way, and passes on only what the user set."""

from __future__ import annotations

import argparse

import pytest
import torch

from idlsec.cli import build_parser
from idlsec.cli.common import dataset_options, model_options, runtime_of

MODEL_FLAGS = {
    "--model",
    "--weights",
    "--num-classes",
    "--input-size",
    "--mean",
    "--std",
    "--labels",
}
DATA_FLAGS = {"--dataset", "--size", "--image-labels"}
RUNTIME_FLAGS = {"--device", "--threads"}
USES = {
    "attack": MODEL_FLAGS | DATA_FLAGS | {"--split", "--all-images", "--seed"},
    "explain": MODEL_FLAGS | DATA_FLAGS | {"--split", "--all-images", "--seed"},
    "universal": MODEL_FLAGS | DATA_FLAGS | {"--seed"},
    "detect": MODEL_FLAGS | DATA_FLAGS | {"--seed"},
    "eval": MODEL_FLAGS | DATA_FLAGS | {"--split"},
    "train": {"--model", "--seed"},
    "defend": {"--model", "--seed"},
    "serve": set(),
    "bench": set(),
}


def _sub(name):
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _flags(p):
    return {s for a in p._actions for s in a.option_strings}


@pytest.mark.parametrize("command", sorted(USES))
def test_every_command_takes_the_groups_that_apply(command):
    flags = _flags(_sub(command))
    assert USES[command] | RUNTIME_FLAGS <= flags, sorted(USES[command] | RUNTIME_FLAGS - flags)


def test_a_flag_is_parsed_the_same_everywhere():
    base = [
        "--model",
        "m.py:make",
        "--num-classes",
        "7",
        "--input-size",
        "3,64,48",
        "--mean",
        "0.5,0.4,0.3",
        "--std",
        "0.2,0.2,0.2",
        "--dataset",
        "folder:imgs",
        "--size",
        "64,48",
        "--image-labels",
        "none",
    ]
    extra = {
        "attack": ["--interpreter", "cam", "--attack", "pgd", "--out", "o"],
        "explain": ["--interpreter", "cam", "--out", "o"],
        "universal": ["--interpreter", "cam", "--source", "0", "--target", "1", "--out", "o"],
        "detect": ["--out", "o"],
        "eval": [],
    }
    for command, rest in extra.items():
        args = _sub(command).parse_args(base + rest)
        assert model_options(args) == {
            "num_classes": 7,
            "input_size": (3, 64, 48),
            "mean": (0.5, 0.4, 0.3),
            "std": (0.2, 0.2, 0.2),
        }, command
        assert dataset_options(args) == {"size": (64, 48), "image_labels": "none"}, command
    args = _sub("attack").parse_args(
        [
            "--model",
            "cifar10-resnet20",
            "--dataset",
            "cifar10",
            "--interpreter",
            "cam",
            "--attack",
            "pgd",
            "--out",
            "o",
            "--size",
            "40",
        ]
    )
    assert model_options(args) == {} and dataset_options(args) == {
        "size": (40, 40)
    }  # only what was set
    assert args.all_images is False and args.seed == 0 and args.split == "test"


@pytest.mark.parametrize("bad", [["--input-size", "3,32"], ["--size", "0,4"], ["--mean", "a,b"]])
def test_bad_values_are_usage_errors(bad, capsys):
    with pytest.raises(SystemExit) as e:
        _sub("eval").parse_args(["--model", "x", "--dataset", "cifar10", *bad])
    assert e.value.code == 2


def test_threads_and_device():
    before = torch.get_num_threads()
    try:
        args = _sub("serve").parse_args(["--threads", "1", "--device", "cpu"])
        assert runtime_of(args) == "cpu" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_detect_takes_a_dataset_and_checks_it_before_any_work(tmp_path, capsys):
    from idlsec.cli import main

    assert main(["detect", "--dataset", "fashion-mnist", "--out", str(tmp_path / "d")]) == 2
    assert "trained on cifar10, not fashion-mnist" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
