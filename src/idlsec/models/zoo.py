"""The model zoo: one ModelCard per name. ``load_model`` (in :mod:`idlsec.models.spec`) builds a
zoo model with verified weights, or any other model named by a spec (torchvision, timm, a user
factory), and wraps the network with its normalisation."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ..data.cifar10 import CLASSES as CIFAR10_CLASSES
from ..data.fashion_mnist import CLASSES as FMNIST_CLASSES
from ..data.resolve import Remote, resolve
from ..errors import ResourceError
from .cifar_resnet import CifarResNet
from .cifar_vgg import CifarVGG
from .fmnist_cnn import FashionCNN
from .normalize import IMAGENET_MEAN, IMAGENET_STD

WEIGHTS_DIR = Path(__file__).parent / "weights"
_AKAMASTER = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"


@dataclass
class ModelCard:
    """What idlsec knows about a classifier. Zoo cards are written here; ``model_card(spec)``
    derives one for any other model (``dataset`` None, layers None: interpreters find them)."""

    name: str                      # zoo name, or the model spec the card was derived from
    dataset: str | None            # what the weights were trained on; None: any (a user model)
    num_classes: int
    input_size: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    build: Callable[[], nn.Module] = field(repr=False)
    cam_layer: str | None = None   # last conv feature map before GAP (None: found by CAM)
    fc_layer: str | None = None    # the linear layer after GAP
    gradcam_layer: str | None = None  # default Grad-CAM layer (None: found by Grad-CAM)
    weights: Remote | None = None  # verified download/mirror file; None = packaged or user-supplied
    packaged: str | None = None    # file name in idlsec/models/weights/
    accuracy: float | None = None  # on the test split this project uses, measured
    cam_relu: bool = False         # the GAP input is ReLU(cam_layer output) (DenseNet)
    notes: str = ""
    classes: tuple[str, ...] | None = None  # class names, index order
    reshape: str | None = None     # "vit" / "swin": how Grad-CAM turns tokens into (N, C, h, w)

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


def _robust_resnet20(name: str, accuracy: float | None, notes: str) -> ModelCard:
    """An adversarially fine-tuned cifar10-resnet20, packaged; its JSON card beside the weights
    holds the training command, seed, SHA-256 and the measured figures."""
    return ModelCard(name=name, dataset="cifar10", num_classes=10, input_size=(3, 32, 32),
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, build=lambda: CifarResNet(20),
                     cam_layer="net.layer3", fc_layer="net.linear", gradcam_layer="net.layer3",
                     packaged=f"{name}.safetensors", accuracy=accuracy,
                     notes=notes + f"; see models/weights/{name}.json")


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
    _robust_resnet20("cifar10-resnet20-robust", None,
                     "cifar10-resnet20 fine-tuned by interpretation-aware adversarial training (3 GPU "
                     "epochs); kept as an alias of the first robust model"),
    _robust_resnet20("cifar10-resnet20-at", 0.6889,
                     "cifar10-resnet20 fine-tuned by FGSM with random start and a cyclic learning rate "
                     "(Wong et al., ICLR 2020) in two reduced CPU stages, the second with the val split "
                     "held out and its best epoch kept; robust figures (PGD-20, AutoAttack) in its card, "
                     "recomputed by benchmarks/robust_zoo.py"),
    _robust_resnet20("cifar10-resnet20-idlsat", 0.6767,
                     "the first stage of cifar10-resnet20-at (sha256 7efeecfa...) fine-tuned by "
                     "interpretation-aware adversarial training (MapPGD-5 "
                     "inner step, CAM map term), a reduced CPU schedule; figures in its card, recomputed "
                     "by benchmarks/robust_zoo.py"),
]}
for _card in CARDS.values():
    _card.classes = tuple(CIFAR10_CLASSES if _card.dataset == "cifar10" else FMNIST_CLASSES)


def register_model(card: ModelCard) -> ModelCard:
    """Add a model to the zoo (used by later modules and by users for their own models)."""
    CARDS[card.name] = card
    return card


def model_names() -> list[str]:
    return sorted(CARDS)




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
    raise ResourceError(f"no weights for {card.name}: pass weights=PATH (--weights) or use "
                        "weights='random'")


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

