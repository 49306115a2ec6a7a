import json

import pytest

from conftest import needs_mirror
from idlsec.cli import main


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"models", "datasets", "interpreters", "attacks", "detectors"}
    assert {"squeeze-nlm", "lid", "ensemble-random", "union"} <= set(info["detectors"])
    assert "cifar10-resnet20" in info["models"] and "fmnist-cnn" in info["models"]
    assert "cam" in info["interpreters"] and "pgd" in info["attacks"]


@pytest.mark.parametrize("argv, message", [
    (["eval", "--model", "nope", "--dataset", "cifar10"], "unknown model 'nope'; valid: "),
    (["eval", "--model", "cifar10-resnet20", "--dataset", "fashion-mnist"], "trained on cifar10"),
    (["attack", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "magic",
      "--attack", "pgd", "--out", "x"], "unknown interpreter 'magic'; valid: "),
    (["attack", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam",
      "--attack", "pgd", "--out", "x", "--param", "gamma=2"], "no parameter"),
])
def test_errors_exit_2_with_a_message(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@needs_mirror
def test_eval_json(capsys):
    assert main(["eval", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--n", "200", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 200 and 0.7 < out["accuracy"] <= 1


@needs_mirror
def test_attack_writes_summary_records_and_pictures(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["attack", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam",
                 "--attack", "pgd", "--n", "3", "--seed", "1", "--steps", "3", "--eps", "8/255",
                 "--out", str(out), "--json"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("n", "asr", "confidence_mean", "iou_topk_mean", "map_l1_mean", "map_l2_mean", "linf_max",
                "seconds", "config"):
        assert key in summary
    assert summary["n"] == 3 and summary["linf_max"] <= 8 / 255 + 1e-6
    assert summary["config"]["attack"] == "pgd" and summary["config"]["targeted"] is True
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["target"] != r["label"] for r in records)
    assert (out / "examples.png").stat().st_size > 1000
