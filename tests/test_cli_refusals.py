"""Every bad CLI input of issue #15 is refused before any work: ``error: <message>`` on stderr,
exit code 2, no traceback, nothing written (run in-process, in an empty temporary folder)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from idlsec.cli import main

ATTACK = ["attack", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam",
          "--attack", "pgd", "--n", "1", "--steps", "1"]
EXPLAIN = ["explain", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam"]
TRAIN = ["train", "--model", "fmnist-cnn", "--epochs", "1"]


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, dirs, files in os.walk(root)
                  for f in files + dirs)


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    """An empty working folder holding one file, ``afile`` (for paths "under a file")."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    return tmp_path


def refused(argv, cwd, capsys, message):
    before = _tree(cwd)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert message in err, err
    assert "Traceback" not in err
    assert _tree(cwd) == before, "a refused command wrote something"


@pytest.mark.parametrize("flags, message", [
    (["--eps", "8/0"], "argument --eps: not a number or fraction: '8/0'"),
    (["--eps", "nan"], "argument --eps: expected a budget in [0, 1]"),
    (["--eps", "inf"], "argument --eps: expected a budget in [0, 1]"),
    (["--eps", "2"], "argument --eps: expected a budget in [0, 1]"),
    (["--seed", "12345678901234567890"], "argument --seed: expected an integer in 0..4294967295"),
    (["--seed", "-1"], "argument --seed: expected an integer in 0..4294967295"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer >= 1"),
    (["--n", "1e3"], "argument --n: expected an integer"),
    (["--threads", "0"], "argument --threads: expected an integer >= 1"),
    (["--device", "bogus"], "unknown device 'bogus'"),
    (["--param", "foo=1"], "attack 'pgd' has no parameter(s) ['foo']"),
    (["--param", "alpha=[1"], "--param alpha: not a YAML value"),
    (["--interpreter-param", "foo=1"], "interpreter 'cam' has no parameter(s) ['foo']"),
])
def test_attack_bad_values(flags, message, cwd, capsys):
    refused(ATTACK + ["--out", "o"] + flags, cwd, capsys, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_absent_cuda(cwd, capsys):
    refused(ATTACK + ["--out", "o", "--device", "cuda"], cwd, capsys, "no CUDA device is available here")


@pytest.mark.parametrize("out, message", [
    ("", "--out is empty"),
    ("  ", "--out is empty"),
    ("afile", "exists and is not a folder"),
    ("afile/x", "afile is a file, not a folder"),
    ("afile/x/y", "afile is a file, not a folder"),
    ("/proc/idlsec-x", "cannot be written"),
    ("/sys/idlsec-x/y", "cannot be written"),
])
def test_attack_bad_out(out, message, cwd, capsys):
    refused(ATTACK + ["--out", out], cwd, capsys, message)


def test_explain_unknown_param_is_refused_up_front(cwd, capsys):
    refused(EXPLAIN + ["--out", "o", "--param", "foo=1"], cwd, capsys,
            "interpreter 'cam' has no parameter(s) ['foo']")
    refused(EXPLAIN + ["--out", "afile/o"], cwd, capsys, "afile is a file")


@pytest.mark.parametrize("flags, message", [
    (["--lr", "-1", "--out", "w.safetensors"], "argument --lr: expected a finite number in (0, inf)"),
    (["--lr", "nan", "--out", "w.safetensors"], "argument --lr"),
    (["--epochs", "0", "--out", "w.safetensors"], "argument --epochs"),
    (["--out", "afile/w.safetensors"], "afile is a file"),  # before ~100 s of training, not after
    (["--out", "/proc/w.safetensors"], "cannot be written"),
    (["--out", "."], "is a folder, expected a file"),
    (["--out", "w.safetensors", "--steps-per-epoch", "3"], "--steps-per-epoch apply to adversarial training"),
    (["--out", "w.safetensors", "--eval-n", "10"], "--eval-n apply to adversarial training only"),
    (["--out", "w.safetensors", "--val-n", "10"], "--val-n apply to adversarial training only"),
    (["--out", "w.safetensors", "--defense", "fgsm", "--val-n", "-1"], "argument --val-n"),
    (["--out", "w.safetensors", "--resume"], "--resume apply to adversarial training only"),
    (["--out", "w.safetensors", "--defense", "pgd", "--resume"], "--resume needs --checkpoint-dir"),
    (["--defense", "pgd"], "--defense needs --out"),
    (["--out", "w.safetensors", "--defense", "pgd", "--checkpoint-dir", "afile"], "not a folder"),
])
def test_train_refusals(flags, message, cwd, capsys):
    refused(TRAIN + flags, cwd, capsys, message)


def test_train_rts_out_under_a_file(cwd, capsys):
    refused(["train-rts", "--model", "cifar10-resnet20", "--out", "afile/r.safetensors"], cwd, capsys,
            "afile is a file")
    refused(["train-rts", "--model", "cifar10-resnet20", "--epochs", "inf", "--out", "r.safetensors"], cwd,
            capsys, "argument --epochs")


def test_other_commands_check_their_out(cwd, capsys):
    refused(["detect", "--out", "afile/d"], cwd, capsys, "afile is a file")
    refused(["detect", "--out", "d", "--fpr", "1"], cwd, capsys, "argument --fpr")
    refused(["defend", "--out", ""], cwd, capsys, "--out is empty")
    refused(["universal", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam",
             "--source", "0", "--target", "1", "--out", "afile/u"], cwd, capsys, "afile is a file")
    refused(["eval", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--batch-size", "-3"], cwd, capsys,
            "argument --batch-size")


def test_usage_errors_are_error_exit_2(cwd, capsys):
    refused(["attack"], cwd, capsys, "the following arguments are required")
    refused(["nope"], cwd, capsys, "invalid choice")
    refused(["eval", "--model", "x", "--dataset", "cifar10", "--size", "0,4"], cwd, capsys, "--size")


def test_help_exits_0(capsys):
    assert main(["attack", "--help"]) == 0
    assert "--eps" in capsys.readouterr().out


def _bench_dir(path, name):
    path.mkdir()
    (path / "results.jsonl").write_text("")
    (path / "suite.json").write_text(json.dumps({"name": name, "configs": [], "runs": []}))
    return path


def test_bench_merge_of_unlike_runs(cwd, capsys):
    _bench_dir(cwd / "a", "paper")
    _bench_dir(cwd / "b", "quscore")
    refused(["bench", "merge", "a", "b", "--out", "m"], cwd, capsys, "runs of different suites")
    (cwd / "c").mkdir()
    (cwd / "c" / "results.jsonl").write_text("")
    (cwd / "c" / "summary.json").write_text("{}")
    refused(["bench", "merge", "a", "c", "--out", "m"], cwd, capsys, "c is not a benchmark directory")
    refused(["bench", "merge", "a", "nowhere", "--out", "m"], cwd, capsys, "no such folder")


def test_bench_suite_checks(cwd, capsys):
    refused(["bench", "nope.yaml", "--out", "b"], cwd, capsys, "suite nope.yaml: no such file")
    refused(["bench", "merge", "--out", "b"], cwd, capsys, "usage: idlsec bench merge")


def _record(i):
    return json.dumps({"index": i, "pos": i, "config": "k"})


@pytest.mark.parametrize("suite, records, message", [
    ("[]", _record(0), "not a suite record"),
    ('{"configs": 5}', _record(0), "not a suite record"),
    ('{"configs": [{"key": "k"}]}', _record(0), "malformed run folder"),
    ('{"configs": [{"key": "k"}]}', "garbage", "corrupt line"),
    (None, _record(0), "neither suite.json"),
])
def test_report_on_a_malformed_run(suite, records, message, cwd, capsys):
    run = cwd / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(records + "\n")
    if suite is not None:
        (run / "suite.json").write_text(suite)
    refused(["report", "run"], cwd, capsys, message)
    refused(["report", "nowhere"], cwd, capsys, "no such folder")


def test_report_summary_not_an_object(cwd, capsys):
    run = cwd / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(_record(0) + "\n")
    (run / "summary.json").write_text("[1, 2]")
    refused(["report", "run"], cwd, capsys, "not an `idlsec attack` summary")


def test_serve_on_a_busy_port(cwd, capsys):
    pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        refused(["serve", "--port", str(port)], cwd, capsys, f"cannot listen on 127.0.0.1:{port}")
    refused(["serve", "--port", "70000"], cwd, capsys, "argument --port")
    (cwd / "afile").write_text("x")
    refused(["serve", "--runs", "afile/runs"], cwd, capsys, "--runs afile/runs")
    refused(["serve", "--openapi", "afile/x.json"], cwd, capsys, "afile is a file")
    refused(["serve", "--host", "0.0.0.0"], cwd, capsys, "beyond loopback")


def test_info_into_a_closed_pipe_ends_quietly(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "idlsec", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    proc.stdout.close()  # `| head -0`: the reader left before the first line
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"Traceback" not in err, err.decode()
