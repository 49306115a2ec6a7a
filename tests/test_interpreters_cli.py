"""`idlsec explain` and `idlsec train-rts` end to end on the real CIFAR-10 ResNet-20 (needs the mirror)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import needs_mirror
from idlsec.cli import main


@needs_mirror
def test_explain_writes_maps_that_can_be_recomputed(tmp_path, resnet20):
    from idlsec.interpreters import GradCAM

    out = tmp_path / "explain"
    assert main(["explain", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "gradcam",
                 "--n", "3", "--seed", "1", "--out", str(out), "--device", "cpu"]) == 0
    assert (out / "maps.png").stat().st_size > 1000
    t = load_file(str(out / "maps.safetensors"))
    assert t["images"].shape == (3, 3, 32, 32) and t["maps"].shape == (3, 1, 8, 8)
    assert t["targets"].dtype == torch.int64
    assert torch.allclose(GradCAM(resnet20)(t["images"], t["targets"]), t["maps"], atol=1e-6)


@needs_mirror
def test_explain_bad_arguments(tmp_path, capsys):
    assert main(["explain", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "lime",
                 "--out", str(tmp_path)]) == 2
    assert "unknown interpreter" in capsys.readouterr().err
    assert main(["explain", "--model", "cifar10-resnet20", "--dataset", "fashion-mnist", "--interpreter", "cam",
                 "--out", str(tmp_path)]) == 2
    assert main(["explain", "--model", "cifar10-resnet20", "--dataset", "cifar10", "--interpreter", "grad",
                 "--n", "0", "--out", str(tmp_path)]) == 2


@needs_mirror
def test_train_rts_writes_a_verified_loadable_model(tmp_path, resnet20):
    from idlsec.interpreters import RTS
    from idlsec.interpreters.rts import verify_packaged
    from idlsec.train.rts import train_rts

    path = tmp_path / "rts.safetensors"
    info = train_rts("cifar10-resnet20", epochs=2 * 8 / 50000, batch_size=8, n_eval=16, out=path,
                     progress=False)
    assert info["steps"] == 2 and set(info["quality"]) >= {"accuracy_kept", "mean_mask_area"}
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == info["sha256"] and card["seed"] == 0 and "command" in card
    verify_packaged(path)
    maps = RTS(resnet20, weights=path)(torch.rand(2, 3, 32, 32), 1)
    assert maps.shape == (2, 1, 16, 16)


def test_train_rts_bad_arguments(capsys):
    assert main(["train-rts", "--model", "nope", "--dataset", "cifar10"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["train-rts", "--model", "cifar10-resnet20", "--epochs", "x"]) == 2  # a usage error
    assert capsys.readouterr().err.startswith("error: argument --epochs")


@needs_mirror
@pytest.mark.parametrize("name", ["cifar10-resnet20", "cifar10-resnet56"])
def test_packaged_rts_is_verified_and_masks_the_object(name, cifar_test):
    from idlsec.interpreters import RTS
    from idlsec.interpreters.rts import rts_weights_path
    from idlsec.models import load_model
    from idlsec.train.rts import rts_quality

    model = load_model(name)
    rts = RTS(model)  # loads models/weights/rts-<name>.safetensors after the SHA-256 check
    card = json.loads(rts_weights_path(name).with_suffix(".json").read_text())
    assert card["model"] == name and card["quality"]["mean_mask_area"] <= 0.35
    q = rts_quality(rts.net, model, cifar_test, n=64, seed=1)
    assert q["mean_mask_area"] < 0.5 and q["accuracy_kept"] > 0.7
