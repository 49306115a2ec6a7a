import json

import pytest

from conftest import needs_mirror
from idlsec.cli import main


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) == {"models", "datasets", "interpreters", "attacks", "detectors", "monitors"}
    assert info["monitors"] == ["blacklight", "piha"]
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


@pytest.mark.parametrize("extra, message", [
    (["--attack", "pgd", "--monitor", "piha"], "black-box attacks only"),
    (["--attack", "square", "--monitor-param", "threshold=0.1"], "--monitor-param given without --monitor"),
    (["--attack", "square", "--monitor", "blacklite"], "unknown monitor 'blacklite'"),
    (["--attack", "square", "--monitor", "piha", "--monitor-param", "detector=none.safetensors"], "not found"),
])
def test_attack_monitor_refusals(extra, message, tmp_path, capsys):
    argv = ["attack", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam",
            "--untargeted", "--out", str(tmp_path / "run"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "run").exists()


@needs_mirror
def test_attack_with_a_monitor_records_detection_before_success(tmp_path, capsys):
    """``--monitor piha``: each record's ``detected_at`` is that of the same Square run through
    a hand-built oracle with PIHA, and the summary's detection rate counts the runs flagged at or
    before the query that first fooled the model."""
    import torch

    from idlsec.attacks import BlackBox, Square
    from idlsec.data import load_dataset, select_images
    from idlsec.defenses import PIHA
    from idlsec.models import load_model

    out = tmp_path / "run"
    assert main(["attack", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "cam",
                 "--attack", "square", "--untargeted", "--n", "3", "--max-queries", "40",
                 "--monitor", "piha", "--out", str(out)]) == 0
    assert "monitor.detection_rate" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    target = load_model("cifar10-resnet20")
    sel = select_images(load_dataset("cifar10", "test"), 3, seed=0, model=target, correct_only=True)
    torch.manual_seed(0)
    oracle = BlackBox(target, max_queries=40, monitor=PIHA())
    Square(oracle, max_queries=40, seed=0).run(sel.x, sel.y)
    assert [r["detected_at"] for r in records] == oracle.detections(torch.arange(3)).tolist()
    stopped = [r["detected_at"] > 0 and (r["fooled_at"] < 0 or r["detected_at"] <= r["fooled_at"])
               for r in records]
    assert summary["monitor"]["detection_rate"] == sum(stopped) / 3
    assert summary["config"]["monitor"] == {"name": "piha"}
    assert "detected_at_mean" not in summary  # indices with -1 for never are not averaged
