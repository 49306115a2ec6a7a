"""Bring your own system, end to end through ``idlsec.cli.main`` (issue 14): a user's module file
(``my_model.py:build``, 1x64x64 GAP+linear CNN) with safetensors weights, a folder of RGB PNGs of
mixed sizes in class sub-folders (and a CSV of labels), through attack, explain, universal,
detect, bench and train-rts (+ an attack with the trained RTS), plus torchvision:resnet18 with
random weights and the errors a user meets first.

The weights are built by hand so that the classifier is known exactly: the first conv averages
3x3 patches and subtracts thresholds, the head reads ReLU(brightness - t): class 0 below t1, 1
between t1 and t2, 2 above t2, and the three sub-folders hold images of three brightness levels.
Every output is checked against facts computed here without idlsec: the folder images decoded
with Pillow, the model run from the user's own module, the eps budget.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from idlsec.cli import main

MODULE = '''
from torch import nn


class Small(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def build():
    return Small()
'''
CLASSES = ("a", "b", "c")
PER_CLASS = 4
EPS = 8 / 255
T1, T2, K = 0.451, 0.529, 20.0  # brightness thresholds of classes 1 and 2, logit scale


def _weights(net):
    with torch.no_grad():
        c1, c2 = net.features[0], net.features[2]
        c1.weight.fill_(1 / 9)
        c1.bias.copy_(-torch.tensor([0.0, T1, T2, 1, 1, 1, 1, 1]))
        c2.weight.zero_()
        c2.bias.zero_()
        for k in range(8):
            c2.weight[k, k, 1, 1] = 1.0
        net.fc.weight.zero_()
        net.fc.bias.zero_()
        net.fc.weight[1, 0], net.fc.bias[1] = K, -T1 * K
        net.fc.weight[2, 0], net.fc.weight[2, 2], net.fc.bias[2] = K, 4 * K, -(T1 + 0.04) * K
    return net.state_dict()


@pytest.fixture(scope="module")
def byom(tmp_path_factory):
    root = tmp_path_factory.mktemp("byom")
    (root / "my_model.py").write_text(MODULE)
    namespace: dict = {}
    exec(compile(MODULE, "my_model", "exec"), namespace)  # the user's module, run here directly
    net = namespace["build"]().eval()
    save_file(_weights(net), str(root / "w.safetensors"))
    rng = np.random.default_rng(0)
    rows, files = [], []
    for c, name in enumerate(CLASSES):
        (root / "imgs" / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            h, w = 40 + 8 * i, 70 - 6 * i  # mixed sizes, none 64x64
            arr = rng.integers(100 + 20 * c, 111 + 20 * c, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr, "RGB").save(root / "imgs" / name / f"{i}.png")
            rows.append(f"{name}/{i}.png,{c}")
            files.append(root / "imgs" / name / f"{i}.png")
    (root / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    # independent decode: Pillow's luma, then its antialiased bilinear resize to 64x64
    ref = torch.stack([torch.from_numpy(np.asarray(
        Image.open(f).convert("L").resize((64, 64), Image.BILINEAR), dtype=np.float32) / 255)
        for f in files]).unsqueeze(1)
    with torch.no_grad():
        assert net(ref).argmax(1).tolist() == [c for c in range(3) for _ in range(PER_CLASS)]
    spec = f"{root}/my_model.py:build"
    model = ["--model", spec, "--weights", str(root / "w.safetensors"), "--input-size", "1,64,64"]
    data = ["--dataset", f"folder:{root / 'imgs'}", "--size", "64,64"]
    return {"root": root, "net": net, "ref": ref, "model": model, "data": data, "spec": spec}


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _closest(ref, images):
    """Per image, the largest pixel difference to the nearest independently decoded image."""
    d = (images[:, None] - ref[None]).abs().flatten(2).amax(2)
    return d.min(1).values


def _check_attack_dir(out, byom, n, eps=EPS):
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == n
    t = load_file(str(out / "adversarial.safetensors"))
    x, adv = t["images"], t["adversarial"]
    assert x.shape == adv.shape == (n, 1, 64, 64)
    assert float(_closest(byom["ref"], x).max()) <= 2 / 255  # the folder's images, at 64x64, gray
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    with torch.no_grad():
        assert t["pred"].tolist() == byom["net"](adv).argmax(1).tolist()
    assert (out / "examples.png").is_file() and (out / "summary.json").is_file()
    return recs, t


@pytest.mark.parametrize("attack", ["pgd", "advedge"])
def test_attack_user_module(byom, tmp_path, capsys, attack):
    rc, out, _ = _run(capsys, "attack", *byom["model"], *byom["data"], "--all-images",
                      "--interpreter", "cam", "--attack", attack, "--steps", 2,
                      "--param", "warmup_steps=1" if attack == "advedge" else "alpha=0.01",
                      "--n", 2, "--out", tmp_path / "o")
    assert rc == 0
    assert "images: 2 of 12 images selected" in out
    _, t = _check_attack_dir(tmp_path / "o", byom, 2)
    assert t["benign_maps"].shape == t["adversarial_maps"].shape == (2, 1, 64, 64)


def test_eval_user_module(byom, capsys):
    rc, out, _ = _run(capsys, "eval", *byom["model"], *byom["data"])
    assert rc == 0 and "accuracy 1.0000 (n=12)" in out  # the fixture's model is right on all 12


def test_attack_csv_labels(byom, tmp_path, capsys):
    root = byom["root"]
    rc, out, _ = _run(capsys, "attack", *byom["model"], *byom["data"],
                      "--image-labels", root / "labels.csv", "--interpreter", "grad",
                      "--attack", "pgd", "--steps", 2, "--n", 2, "--out", tmp_path / "o")
    assert rc == 0
    assert "images: 12 of 12 images qualified, 2 selected" in out  # the model is always right
    recs, t = _check_attack_dir(tmp_path / "o", byom, 2)
    # the CSV's label of each image is the class of its brightness level
    levels = ((t["images"].mean((1, 2, 3)) * 255 - 105) / 20).round().long()
    assert [r["label"] for r in recs] == levels.tolist()
    assert [r["target"] for r in recs] == t["labels"].tolist() != levels.tolist()  # attacked


@pytest.mark.parametrize("interpreter", ["cam", "gradcam", "grad"])
def test_explain_user_module(byom, tmp_path, capsys, interpreter):
    rc, out, _ = _run(capsys, "explain", *byom["model"], *byom["data"], "--all-images",
                      "--interpreter", interpreter, "--n", 2, "--out", tmp_path / "o")
    assert rc == 0 and "images: 2 of 12 images selected" in out
    t = load_file(str(tmp_path / "o" / "maps.safetensors"))
    assert t["images"].shape == (2, 1, 64, 64) and t["maps"].shape == (2, 1, 64, 64)
    assert float(_closest(byom["ref"], t["images"]).max()) <= 2 / 255
    with torch.no_grad():
        assert t["targets"].tolist() == byom["net"](t["images"]).argmax(1).tolist()
    m = t["maps"].flatten(1)
    assert torch.all(m.amin(1) >= 0) and torch.all(m.amax(1) <= 1 + 1e-6)
    assert (tmp_path / "o" / "maps.png").is_file()


def test_universal_user_module(byom, tmp_path, capsys):
    rc, out, _ = _run(capsys, "universal", *byom["model"], *byom["data"], "--interpreter", "cam",
                      "--source", "a", "--target", "b", "--n-train", 2, "--n-inhibition", 2,
                      "--n-test-other", 2, "--iterations", 2, "--out", tmp_path / "o")
    assert rc == 0
    # one folder: the 4 source images are split, 2 to fit and 2 held out
    assert "images: 2 a image(s) to fit, 2 held out" in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n_source"] == 2 and summary["n_other"] == 2
    assert (summary["source"], summary["target"]) == ("a", "b")
    delta = load_file(str(tmp_path / "o" / "delta.safetensors"))["delta"]
    assert delta.shape[-3:] == (1, 64, 64) and float(delta.abs().max()) <= EPS + 1e-6
    assert (tmp_path / "o" / "universal.png").is_file()


def test_detect_user_module(byom, tmp_path, capsys):
    rc, out, _ = _run(capsys, "detect", *byom["model"], *byom["data"], "--n", 2, "--n-benign", 2,
                      "--attack", "pgd", "--eps", 0.1, "--interpreters", "cam,grad",
                      "--out", tmp_path / "o")
    assert rc == 0
    assert "images: 12 images of imgs: 6 benign (of 6 wanted)" in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    rows = [r for r in summary["rows"] if "tpr_at_fpr" in r]
    assert {r["detector"] for r in rows} >= {"ensemble", "squeeze"}
    assert all(0 <= r["tpr_at_fpr"] <= 1 for r in rows)


def test_bench_suite_user_module(byom, tmp_path, capsys):
    root = byom["root"]
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: byom\n"
        f"settings: {{n: 2, batch_size: 2, params: {{steps: 2}}, weights: {root}/w.safetensors,\n"
        "  all_images: true, model_options: {input_size: [1, 64, 64]},\n"
        "  data_options: {size: [64, 64]}}\n"
        f"models: ['{byom['spec']}']\n"
        f"datasets: ['folder:{root / 'imgs'}']\n"
        "interpreters: [cam, grad]\n"
        "attacks: [pgd]\n")
    rc, out, _ = _run(capsys, "bench", suite, "--out", tmp_path / "b")
    assert rc == 0
    assert out.count("images: 2 of 12 images selected") == 2
    recs = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and {r["interpreter"] for r in recs} == {"cam", "grad"}
    assert all(r["linf"] <= EPS + 1e-6 for r in recs)
    # the records of `idlsec attack` with the same settings (same images, same attack)
    rc, _, _ = _run(capsys, "attack", *byom["model"], *byom["data"], "--all-images",
                    "--interpreter", "cam", "--attack", "pgd", "--steps", 2, "--n", 2,
                    "--batch-size", 2, "--out", tmp_path / "a")
    single = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in single] == [r["index"] for r in recs if r["interpreter"] == "cam"]


def test_train_rts_then_attack(byom, tmp_path, capsys):
    root, weights = byom["root"], tmp_path / "rts.safetensors"
    rc, out, err = _run(capsys, "train-rts", *byom["model"], "--dataset", f"folder:{root / 'imgs'}",
                        "--epochs", 1, "--batch-size", 4, "--n-eval", 2, "--out", weights)
    assert rc == 0 and weights.is_file()
    assert "images: 10 to train on, 2 to measure" in err
    info = json.loads(out)
    assert info["n_train"] + info["n_eval"] == 12 and info["quality"]["n"] == 2
    common = ["attack", *byom["model"], *byom["data"], "--all-images", "--interpreter", "rts",
              "--attack", "pgd", "--steps", 2, "--n", 2]
    rc, _, err = _run(capsys, *common, "--out", tmp_path / "none")
    assert rc == 2 and "error:" in err and "train-rts" in err  # no RTS ships for a user model
    rc, out, _ = _run(capsys, *common, "--interpreter-param", f"weights={weights}",
                      "--out", tmp_path / "o")
    assert rc == 0 and "images: 2 of 12" in out
    _, t = _check_attack_dir(tmp_path / "o", byom, 2)
    assert t["benign_maps"].shape[:2] == (2, 1)


def test_torchvision_random_weights(byom, tmp_path, capsys):
    root = byom["root"]
    rc, out, _ = _run(capsys, "attack", "--model", "torchvision:resnet18", "--weights", "random",
                      "--num-classes", 3, "--dataset", f"folder:{root / 'imgs'}", "--size", "64,64",
                      "--all-images", "--interpreter", "cam", "--attack", "pgd", "--steps", 2,
                      "--n", 2, "--out", tmp_path / "o")
    assert rc == 0 and "images: 2 of 12 images selected" in out
    t = load_file(str(tmp_path / "o" / "adversarial.safetensors"))
    assert t["images"].shape == (2, 3, 64, 64)  # RGB kept for an RGB model
    assert float((t["adversarial"] - t["images"]).abs().max()) <= EPS + 1e-6
    gray = (t["images"] * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    assert float(_closest(byom["ref"], gray).max()) <= 3 / 255  # luma and resizing commute


@pytest.mark.parametrize("change, flag", [
    (["--num-classes", "5"], "--num-classes"),
    (["--model", "{root}/my_model.py:nope"], "nope"),
])
def test_errors(byom, tmp_path, capsys, change, flag):
    argv = ["attack", *byom["model"], *byom["data"], "--all-images", "--interpreter", "cam",
            "--attack", "pgd", "--n", 2, "--out", tmp_path / "o"]
    if change[0] in argv:
        argv[argv.index(change[0]) + 1] = change[1].format(root=byom["root"])
    else:
        argv += change
    rc, _, err = _run(capsys, *argv)
    assert rc == 2 and err.startswith("error:") and flag in err
    assert not (tmp_path / "o").exists()  # refused before any work


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
