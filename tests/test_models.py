import shutil

import pytest
import torch

from conftest import needs_mirror
from idlsec.errors import ChecksumError, ConfigError
from idlsec.interpreters import CAM
from idlsec.models import get_card, load_model, smooth_relu
from idlsec.train.evaluate import model_accuracy


@needs_mirror
def test_resnet20_accuracy_on_jpeg_test_split(cifar_test, resnet20):
    assert model_accuracy(resnet20, cifar_test) == pytest.approx(0.810, abs=0.005)


def test_fmnist_cnn_packaged_weights_reach_90_percent():
    import os

    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("dataset-fashion-mnist is not installed")
    from idlsec.data import load_dataset

    model = load_model("fmnist-cnn")
    assert model_accuracy(model, load_dataset("fashion-mnist", "test"), n=2000) >= 0.90


@needs_mirror
def test_corrupt_checkpoint_is_refused(tmp_path):
    src = get_card("cifar10-resnet20").weights
    from idlsec.data import mirror_dir

    bad = tmp_path / src.filename
    shutil.copy(mirror_dir() / src.relpath, bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ChecksumError, match="sha256"):
        load_model("cifar10-resnet20", weights=bad)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ConfigError, match="valid: cifar10-resnet20"):
        load_model("resnet1000")


def test_model_is_eval_frozen_and_normalises_inside():
    model = load_model("cifar10-resnet20", weights="random")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model(x), model.net((x - model.normalize.mean) / model.normalize.std))


def test_cam_refuses_model_without_gap_fc_head():
    pytest.importorskip("torchvision")
    vgg = load_model("torchvision:vgg16", weights="random")
    with pytest.raises(ConfigError, match="CAM cannot apply"):
        CAM(vgg)


def test_smooth_relu_keeps_forward_and_gives_second_order_gradients(tiny_model, images):
    x, _ = images
    x = x[:2].clone().requires_grad_(True)
    plain = tiny_model(x)
    with smooth_relu():
        smooth = tiny_model(x)
        (g,) = torch.autograd.grad(smooth[:, 0].sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.abs().sum(), x)
    assert torch.equal(plain, smooth)
    assert gg.abs().sum() > 0
    # the true ReLU has a zero second derivative almost everywhere
    (g2,) = torch.autograd.grad(tiny_model(x)[:, 0].sum(), x, create_graph=True)
    (gg2,) = torch.autograd.grad(g2.abs().sum(), x, allow_unused=True)
    assert gg2 is None or gg2.abs().sum() < gg.abs().sum() * 1e-3
    with pytest.raises(ConfigError, match="smooth ReLU kind"):
        with smooth_relu("gelu"):
            pass
