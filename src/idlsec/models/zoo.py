"""The model zoo: one ModelCard per name, and ``load_model(name)`` that builds, loads verified
weights and wraps the network with its normalisation."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ..data.resolve import Remote, cache_dir, resolve
from ..errors import ConfigError, ResourceError, unknown_name
from .checkpoints import load_into, read_state_dict
from .cifar_resnet import CifarResNet
from .cifar_vgg import CifarVGG
from .fmnist_cnn import FashionCNN
from .normalize import IMAGENET_MEAN, IMAGENET_STD, NormalizedModel

WEIGHTS_DIR = Path(__file__).parent / "weights"
_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"


@dataclass
class ModelCard:
    name: str
    dataset: str
    num_classes: int
    input_size: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    build: Callable[[], nn.Module] = field(repr=False)
    cam_layer: str | None          # last conv feature map before GAP (None: CAM does not apply)
    fc_layer: str | None           # the linear layer after GAP
    gradcam_layer: str             # default Grad-CAM layer
    weights: Remote | None = None  # verified download/mirror file; None = packaged or user-supplied
    packaged: str | None = None    # file name in idlsec/models/weights/
    accuracy: float | None = None  # on the test split this project uses, measured
    cam_relu: bool = False         # the GAP input is ReLU(cam_layer output) (DenseNet)
    notes: str = ""

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("build")
        d["weights"] = self.weights.filename if self.weights else self.packaged
        return d


def _cifar_resnet(depth: int, sha: str, accuracy: float | None) -> ModelCard:
    fname = f"resnet{depth}-{sha[:8]}.th"
    return ModelCard(
        name=f"cifar10-resnet{depth}", dataset="cifar10", num_classes=10, input_size=(3, 32, 32),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, build=lambda: CifarResNet(depth),
        cam_layer="net.layer3", fc_layer="net.linear", gradcam_layer="net.layer3",
        weights=Remote(fname, f"models/cifar10-resnet/{fname}", sha, url=_AKAMASTER + fname),
        accuracy=accuracy, notes="He et al. 2016, option-A shortcuts; weights by Y. Idelbayev (BSD-2)")


def _torchvision(arch: str, cam_layer, fc_layer, gradcam_layer, cam_relu=False) -> ModelCard:
    def build():
        try:
            import torchvision.models as tvm
        except ImportError:
            raise ConfigError("torchvision models need the optional extra: pip install 'idlsec[torchvision]'") from None
        return getattr(tvm, arch)(weights=None)

    return ModelCard(
        name=f"torchvision:{arch}", dataset="imagenet", num_classes=1000, input_size=(3, 224, 224),
        mean=IMAGENET_MEAN, std=IMAGENET_STD, build=build, cam_layer=cam_layer, fc_layer=fc_layer,
        gradcam_layer=gradcam_layer, cam_relu=cam_relu,
        notes="ImageNet weights from an explicit path or <cache>/models/torchvision/<arch>.pth; "
              "weights='random' for timing")


CARDS: dict[str, ModelCard] = {c.name: c for c in [
    _cifar_resnet(20, "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8", 0.8103),
    _cifar_resnet(32, "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850", None),
    _cifar_resnet(44, "014dd6541728a1c700b1642ab640e211dc6eb8ed507d70697458dc8f8a0ae2e4", None),
    _cifar_resnet(56, "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367", 0.832),
    ModelCard(name="fmnist-cnn", dataset="fashion-mnist", num_classes=10, input_size=(1, 28, 28),
              mean=(0.2860,), std=(0.3530,), build=FashionCNN, cam_layer="net.features",
              fc_layer="net.linear", gradcam_layer="net.features", packaged="fmnist-cnn.safetensors",
              notes="idlsec's own; see models/weights/fmnist-cnn.json for its training command"),
    ModelCard(name="cifar10-vgg", dataset="cifar10", num_classes=10, input_size=(3, 32, 32),
              mean=IMAGENET_MEAN, std=IMAGENET_STD, build=CifarVGG, cam_layer="net.features",
              fc_layer="net.linear", gradcam_layer="net.features", packaged="cifar10-vgg.safetensors",
              notes="idlsec's own VGG-style net (BN, GAP head); see models/weights/cifar10-vgg.json"),
    ModelCard(name="cifar10-resnet20-robust", dataset="cifar10", num_classes=10, input_size=(3, 32, 32),
              mean=IMAGENET_MEAN, std=IMAGENET_STD, build=lambda: CifarResNet(20), cam_layer="net.layer3",
              fc_layer="net.linear", gradcam_layer="net.layer3", packaged="cifar10-resnet20-robust.safetensors",
              notes="cifar10-resnet20 fine-tuned by interpretation-aware adversarial training; see "
                    "models/weights/cifar10-resnet20-robust.json for the command"),
    _torchvision("resnet50", "net.layer4", "net.fc", "net.layer4"),
    _torchvision("densenet169", "net.features", "net.classifier", "net.features", cam_relu=True),
    _torchvision("vgg16", None, None, "net.features.29"),
]}


def register_model(card: ModelCard) -> ModelCard:
    """Add a model to the zoo (used by later modules and by users for their own models)."""
    CARDS[card.name] = card
    return card


def model_names() -> list[str]:
    return sorted(CARDS)


def get_card(name: str) -> ModelCard:
    if name not in CARDS:
        raise unknown_name("model", name, CARDS)
    return CARDS[name]


def load_model(name: str, *, weights: str | Path | None = None, device="cpu") -> NormalizedModel:
    """Build zoo model ``name`` with verified weights, in eval mode, normalisation inside.

    ``weights``: an explicit file (checked against the card's SHA-256 when it has one), or
    ``"random"`` for an untrained network (timing, tests)."""
    card = get_card(name)
    net = card.build()
    if weights != "random":
        path = _weights_path(card, weights)
        load_into(net, read_state_dict(path), source=str(path))
    model = NormalizedModel(net, card.mean, card.std, card=card).to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _weights_path(card: ModelCard, explicit) -> Path:
    if card.weights is not None:
        return resolve(card.weights, explicit)
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise ResourceError(f"weights file {p} does not exist")
        return p
    if card.packaged:
        p = WEIGHTS_DIR / card.packaged
        if not p.is_file():
            raise ResourceError(f"packaged weights {p} are missing; train them with "
                                f"`idlsec train --model {card.name}`")
        _check_packaged(p)
        return p
    arch = card.name.split(":", 1)[-1]
    p = cache_dir() / "models" / "torchvision" / f"{arch}.pth"
    if p.is_file():
        return p
    raise ResourceError(f"no weights for {card.name}: pass weights=PATH (--weights), put them at {p}, "
                        "or use weights='random'")


def _check_packaged(path: Path):
    """Packaged weights carry their SHA-256 in the JSON card beside them."""
    from ..data.resolve import file_digest
    from ..errors import ChecksumError

    meta = path.with_suffix(".json")
    if meta.is_file():
        expected = json.loads(meta.read_text()).get("sha256")
        if expected and file_digest(path) != expected:
            raise ChecksumError(f"{path}: sha256 does not match {meta.name} ({expected})")


def model_summary(model: nn.Module) -> dict:
    card = getattr(model, "card", None)
    return card.to_json() if card else {"name": type(model).__name__}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

