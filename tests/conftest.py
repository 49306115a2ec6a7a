"""Shared fixtures: tiny models with GAP+FC heads, a few real images, the offline mirror."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ["IDLSEC_OFFLINE"] = "1"  # tests never touch the network
_SHARED = Path(__file__).resolve().parents[2] / "shared"
if "IDLSEC_MIRROR" not in os.environ and (_SHARED / "models").is_dir():
    os.environ["IDLSEC_MIRROR"] = str(_SHARED)
torch.set_num_threads(1)  # the suite runs 2 workers on 2 cores

from _data_skips import (  # noqa: E402, F401  (hooks: data skips are listed loudly, or fail)
    pytest_runtest_logreport,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)
from idlsec.models import CifarResNet, FashionCNN, ModelCard, NormalizedModel  # noqa: E402
from idlsec.models.normalize import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

needs_mirror = pytest.mark.skipif(not os.environ.get("IDLSEC_MIRROR"), reason="no local mirror (../shared)")


def _tiny_card(name, channels, size, build):
    return ModelCard(name=name, dataset="synthetic", num_classes=10, input_size=(channels, size, size),
                     mean=IMAGENET_MEAN[:channels] if channels == 3 else (0.5,),
                     std=IMAGENET_STD[:channels] if channels == 3 else (0.5,), build=build,
                     cam_layer="net.layer3" if channels == 3 else "net.features",
                     fc_layer="net.linear", gradcam_layer="net.layer3" if channels == 3 else "net.features")


def make_tiny_resnet(seed: int = 0) -> NormalizedModel:
    """A random-weight CIFAR ResNet-8 (GAP+FC head, 8x8 CAM) — fast enough for every invariant."""
    torch.manual_seed(seed)
    card = _tiny_card("tiny-resnet8", 3, 32, lambda: CifarResNet(8))
    model = NormalizedModel(card.build(), card.mean, card.std, card=card).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture
def tiny_model():
    return make_tiny_resnet()


@pytest.fixture
def tiny_fmnist_model():
    torch.manual_seed(0)
    card = _tiny_card("tiny-fmnist", 1, 28, lambda: FashionCNN(width=8))
    model = NormalizedModel(card.build(), card.mean, card.std, card=card).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture
def images():
    """4 random images (3x32x32) in [0, 1] and labels."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 3])


@pytest.fixture(scope="session")
def cifar_test():
    if not os.environ.get("IDLSEC_MIRROR"):
        pytest.skip("no local mirror (../shared)")
    from idlsec.data import load_dataset

    return load_dataset("cifar10", "test")


@pytest.fixture(scope="session")
def resnet20():
    if not os.environ.get("IDLSEC_MIRROR"):
        pytest.skip("no local mirror (../shared)")
    from idlsec.models import load_model

    return load_model("cifar10-resnet20")
