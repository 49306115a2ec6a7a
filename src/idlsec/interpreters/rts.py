"""RTS: real-time saliency (Dabkowski & Gal, NeurIPS 2017): a trained masking model predicts the
mask in one forward pass (architecture in :mod:`idlsec.interpreters.rts_net`).

``weights``: None (default) loads the packaged ``idlsec/models/weights/rts-<model>.safetensors``
of a zoo model, verified against the SHA-256 in the JSON card beside it; a path loads that file
(any model: ``idlsec train-rts --model SPEC --dataset SPEC --out FILE`` writes one, or
:func:`idlsec.train.rts.train_rts`); ``"random"`` builds an untrained masking model for any model
with a card (tests, attack development). ``net=`` passes a :class:`SaliencyNet` directly (for a
bare ``nn.Module``: ``SaliencyNet(model, input_size=(C, H, W))``). The masking model's parameters
are frozen.

Native resolution: 16x16 on CIFAR-10, 14x14 on Fashion-MNIST, 56x56 at 224. The raw mask is in
[0, 1]; ADV^2 compares it without min-max (pass ``normalize=False`` for that), the default follows
the interpreter contract (min-max per sample).

API for the ADV^2 RTS attack, whose loss has a term on the encoder's own classification head::

    rts = RTS(model)
    logits, enc_logits, maps = rts.logits_encoder_and_maps(x_adv, target)   # one encoder pass
    loss = ce(logits, t) + c * ((maps - m_t) ** 2).mean((1, 2, 3)).sum() + 0.1 * ce(enc_logits, t)

``rts.encoder_logits(x)`` gives the encoder logits alone. With the default frozen encoder the
encoder *is* the classifier, so ``enc_logits`` equals ``logits`` (the same tensor).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ChecksumError, ConfigError, ResourceError
from .base import Interpreter, minmax
from .rts_net import SaliencyNet, load_saliency_net


def rts_weights_path(model_name: str) -> Path:
    """Where the packaged masking model of zoo model ``model_name`` lives."""
    from ..models.zoo import WEIGHTS_DIR

    return WEIGHTS_DIR / f"rts-{model_name.replace(':', '-')}.safetensors"


def verify_packaged(path: Path) -> None:
    """Check ``path`` against the SHA-256 in the JSON card beside it."""
    from ..data.resolve import file_digest

    meta = path.with_suffix(".json")
    if not meta.is_file():
        raise ChecksumError(f"{path}: its card {meta.name} (with the SHA-256) is missing")
    expected = json.loads(meta.read_text()).get("sha256")
    if not expected or file_digest(path) != expected:
        raise ChecksumError(f"{path}: sha256 does not match {meta.name} ({expected})")


class RTS(Interpreter):
    name = "rts"

    def __init__(self, model: nn.Module, *, weights=None, net: SaliencyNet | None = None, **kwargs):
        super().__init__(model, **kwargs)
        if net is None:
            if isinstance(weights, str) and weights == "random":
                net = SaliencyNet.for_model(model)
            else:
                path = Path(weights) if weights is not None else self._packaged()
                if not path.is_file():
                    raise ResourceError(f"RTS weights file {path} does not exist")
                net = load_saliency_net(model, path)
        elif not isinstance(net, SaliencyNet):
            raise ConfigError(f"net must be a SaliencyNet, got {type(net).__name__}")
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def _packaged(self) -> Path:
        card = getattr(self.model, "card", None)
        train = ("train one with `idlsec train-rts --model SPEC --dataset SPEC --out FILE` and "
                 "pass weights=FILE (or weights='random' for an untrained masking model)")
        if card is None:
            raise ConfigError(f"RTS needs weights= for a model without a card: {train}")
        path = rts_weights_path(card.name)
        if path.is_file():
            verify_packaged(path)
            return path
        if card.dataset == "imagenet" or card.name.startswith(("torchvision:", "timm:")):
            raise ResourceError(f"no trained RTS ships for {card.name}: its training set, "
                                "ImageNet, is not available to idlsec; train one on a folder of "
                                f"its images (`idlsec train-rts --model {card.name} --dataset "
                                "folder:DIR --out FILE`), pass weights=FILE, or weights='random'")
        if card.dataset is None:
            raise ResourceError(f"no trained RTS for {card.name}: {train}")
        raise ResourceError(f"no trained RTS for {card.name}: train one with `idlsec train-rts "
                            f"--model {card.name} --dataset {card.dataset}`, pass weights=PATH, "
                            "or weights='random'")

    def forward_all(self, x: torch.Tensor, target: torch.Tensor):
        """(classifier logits, encoder logits, raw mask (N, 1, h, w)); no validation."""
        mask, enc_logits = self.net(x, target)
        logits = enc_logits if self.net.shares_classifier else self.model(x)
        return logits, enc_logits, mask

    def compute_with_logits(self, x, target, *, create_graph):
        logits, _, mask = self.forward_all(x, target)
        return logits, mask

    def logits_encoder_and_maps(self, x: torch.Tensor, target: torch.Tensor):
        """For attack loops: (logits, encoder logits, maps normalised as ``self.normalize``)."""
        logits, enc_logits, mask = self.forward_all(x, target)
        return logits, enc_logits, (minmax(mask) if self.normalize else mask)

    def encoder_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's own classification logits (ADV^2's ``sC``)."""
        return self.net.encoder_module(x)
