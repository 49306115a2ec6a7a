"""The masking model of RTS (Dabkowski & Gal, NeurIPS 2017), as in PiotrDabkowski/pytorch-saliency
and ADV^2's ``ia/int_models/rt_saliency.py``, written for any classifier (any channel count, any
input size).

- Encoder: the classifier itself (its normalisation inside; inputs in [0, 1], so ADV^2's
  ``(x - 0.5) * 4`` scaling is not needed). Feature maps are read with hooks at the card's
  ``cam_layer`` (else ``gradcam_layer``; for a model without them: Grad-CAM's layer search
  ``find_gradcam_layer``, :func:`find_feature_layer`): the deepest map (8x8x64 on the CIFAR
  ResNets, 7x7x2048 on ResNet-50), plus one skip map per upsampling stage, found by the same probe pass (the
  widest, then latest, module run once per pass whose output has the stage's resolution:
  ``layer3/2/1`` on ResNet-50, ``layer2`` on the CIFAR ResNets). The encoder also gives
  its own classification logits (the classifier's output; ADV^2's ``sC``).
  ``train_encoder=False`` (default): the encoder *is* the classifier (frozen, shared, not part of
  this module's state), so the encoder logits are the classifier's logits from the same pass.
  ``train_encoder=True`` (ADV^2's ``fix_encoder=False``): a private deep copy is fine-tuned with
  the decoder (its BatchNorm statistics stay frozen) and saved with it.
- Class selector: ``emb = Embedding(num_classes, C)``; ``act = sum_c A * emb[y]``;
  ``A <- A * sigmoid(act - model_confidence)``.
- Upsampler: UNet-style stages (PixelShuffle x2, skip projection, merge conv, bottleneck residual
  block), from the deepest resolution to ``side / out_stride``: 7 -> 14 -> 28 -> 56 at 224 (out
  stride 4, base width 64, as the paper), 8 -> 16 on CIFAR 32x32 and 7 -> 14 on 28x28 (out stride
  2, base width 32); a non-square input keeps the feature map's aspect (12x16 -> 48x64 on 96x128).
- Output: two channels a, b; ``mask = |a| / (|a| + |b| + 1e-8)`` in [0, 1].

``SaliencyNet(model)`` builds a random-init network: the input size and class count come from the
model's card, or ``input_size=(C, H, W)`` (and optionally ``num_classes``, else the logits' width)
for a bare ``nn.Module``. :func:`load_saliency_net` rebuilds a trained one from a safetensors file
whose metadata carries this configuration."""

from __future__ import annotations

import copy
import json
import math
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..models.normalize import get_layer


@contextmanager
def capture_outputs(model: nn.Module, names: list[str]):
    """Record the forward outputs of the named sub-modules in a dict; hooks always removed."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name in names:
            handles.append(get_layer(model, name).register_forward_hook(
                lambda _m, _i, out, name=name: store.__setitem__(name, out)))
        yield store
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def probe(model: nn.Module, input_size) -> tuple[list, dict[str, int], torch.Tensor]:
    """One eval-mode forward pass of a zero image: ``(order, calls, output)`` where ``order`` lists
    ``(name, shape)`` of every named sub-module whose output is a (N, C, h, w) tensor, in the order
    the outputs complete, and ``calls`` counts how often each named module ran."""
    order: list[tuple[str, tuple]] = []
    calls: dict[str, int] = {}

    def hook(name, out):
        calls[name] = calls.get(name, 0) + 1
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            order.append((name, tuple(out.shape)))

    handles = [mod.register_forward_hook(lambda _m, _i, out, name=name: hook(name, out))
               for name, mod in model.named_modules() if name]
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(1, *input_size, device=_device_of(model)))
    except RuntimeError as e:
        shape = ", ".join(map(str, input_size))
        raise ConfigError(f"the model does not run on a (1, {shape}) input (input_size); "
                          f"{str(e).splitlines()[0][:200]}") from None
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return order, calls, out


def _device_of(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def find_feature_layer(model: nn.Module, input_size) -> str:
    """The RTS encoder's feature layer for a model without a card field: Grad-CAM's default
    layer (:func:`idlsec.interpreters.layers.find_gradcam_layer`), which must be a convolutional
    map (a transformer's tokens are refused)."""
    from .layers import find_gradcam_layer

    name, reshape = find_gradcam_layer(model, tuple(input_size))
    if reshape is not None:
        raise ConfigError(f"RTS needs a convolutional (N, C, h, w) feature map; {name!r} gives "
                          f"tokens ({reshape}): pass feature_layer= (a CNN stage), if any")
    return name


def discover_layers(order, calls, feature_layer: str, n_stages: int) -> tuple[list, list]:
    """For each upsampling stage, the module whose 4-D output has twice the previous resolution
    (among those that complete before ``feature_layer`` and run once per forward: torchvision's
    Bottleneck reuses one ReLU), preferring the most channels, then the latest (e.g. ``layer3``
    rather than the first 1x1 conv of ``layer4``); None where there is none.
    ``order``, ``calls``: from :func:`probe`. Returns (skip layer names, their channel counts)."""
    done = [i for i, (n, _) in enumerate(order) if n == feature_layer]
    before = [(i, n, s) for i, (n, s) in enumerate(order[:done[-1]]) if calls[n] == 1]
    fh, fw = order[done[-1]][1][-2:]
    names, chans = [], []
    for k in range(1, n_stages + 1):
        hits = [(s[1], i, n) for i, n, s in before if s[-2:] == (fh * 2 ** k, fw * 2 ** k)]
        best = max(hits) if hits else None
        names.append(best[2] if best else None)
        chans.append(best[0] if best else 0)
    return names, chans


def _cbr(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class Bottleneck(nn.Module):
    """Residual bottleneck block: x + (1x1 -> 3x3 -> 1x1), then ReLU."""

    def __init__(self, width: int):
        super().__init__()
        mid = max(width // 2, 1)
        self.body = nn.Sequential(_cbr(width, mid, 1), _cbr(mid, mid, 3),
                                  nn.Conv2d(mid, width, 1, bias=False), nn.BatchNorm2d(width))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(x + self.body(x))


class UpStage(nn.Module):
    def __init__(self, cin: int, cout: int, skip_channels: int):
        super().__init__()
        self.up = nn.Sequential(nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.PixelShuffle(2))
        self.skip = _cbr(skip_channels, cout, 1) if skip_channels else None
        self.merge = _cbr(2 * cout if skip_channels else cout, cout, 3)
        self.block = Bottleneck(cout)

    def forward(self, h, skip=None):
        h = self.up(h)
        if self.skip is not None:
            h = torch.cat([h, self.skip(skip)], 1)
        return self.block(self.merge(h))


class SaliencyNet(nn.Module):
    """Masking model: ``mask, encoder_logits = net(x, target)`` with mask (N, 1, h, w) in [0, 1]."""

    def __init__(self, classifier: nn.Module, *, feature_layer: str | None = None,
                 width: int | None = None, out_stride: int | None = None,
                 model_confidence: float = 0.0, train_encoder: bool = False, input_size=None,
                 num_classes: int | None = None, skip_layers=None):
        super().__init__()
        card = getattr(classifier, "card", None)
        input_size = tuple(input_size or (card.input_size if card else ()))
        if len(input_size) != 3 or not all(isinstance(v, int) and v > 0 for v in input_size):
            raise ConfigError("RTS needs the model's input size: pass input_size=(C, H, W) (a "
                              "model from load_model has it on its card), got "
                              f"{input_size or None}")
        order, calls, out = probe(classifier, input_size)
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise ConfigError("RTS needs a classifier that returns logits (N, num_classes), got "
                              f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)}")
        num_classes = num_classes or (card.num_classes if card else None) or int(out.shape[1])
        if out.shape[1] != num_classes:
            raise ConfigError(f"RTS was built for {num_classes} classes, the model gives "
                              f"{out.shape[1]} logits")
        feature_layer = (feature_layer or (card and (card.cam_layer or card.gradcam_layer))
                         or find_feature_layer(classifier, input_size))
        get_layer(classifier, feature_layer)  # a clear error naming valid layers
        feats = [s for n, s in order if n == feature_layer]
        if not feats:
            raise ConfigError(f"RTS feature layer {feature_layer!r} returns no (N, C, h, w) "
                              "feature map (feature_layer=)")
        c0, fh, fw = feats[-1][1:]
        side = min(input_size[1:])
        width = width or (64 if side >= 112 else 32)
        out_stride = out_stride or (4 if side >= 112 else 2)
        ratio = min(input_size[1] / fh, input_size[2] / fw) / out_stride
        n_stages = max(0, round(math.log2(ratio)))
        names, chans = discover_layers(order, calls, feature_layer, n_stages)
        if skip_layers is not None and list(skip_layers) != names:
            raise ConfigError(f"this masking model was built on skip layers {list(skip_layers)}, "
                              f"the classifier now gives {names}")
        self.config = {"feature_layer": feature_layer, "width": width, "out_stride": out_stride,
                       "model_confidence": float(model_confidence),
                       "train_encoder": bool(train_encoder), "input_size": list(input_size),
                       "num_classes": int(num_classes), "skip_layers": names}
        self.feature_layer, self.skip_layers = feature_layer, names
        self.model_confidence = float(model_confidence)
        self.train_encoder = bool(train_encoder)
        if self.train_encoder:
            self.encoder = copy.deepcopy(classifier)
            for p in self.encoder.parameters():
                p.requires_grad_(True)
        else:
            self._shared = [classifier]  # a list: not registered, not in state_dict, mode untouched
        widths = [width * 2 ** (n_stages - 1 - i) for i in range(n_stages)] or [width]
        self.embedding = nn.Embedding(num_classes, c0)
        nn.init.normal_(self.embedding.weight, std=c0 ** -0.5)
        self.proj = _cbr(c0, 2 * widths[0], 1)
        stages, cin = [], 2 * widths[0]
        for i in range(n_stages):
            stages.append(UpStage(cin, widths[i], chans[i] if names[i] else 0))
            cin = widths[i]
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(cin, 2, 3, padding=1)

    @classmethod
    def for_model(cls, model: nn.Module, **kwargs) -> SaliencyNet:
        """A randomly initialised masking model for ``model`` (same as the constructor)."""
        return cls(model, **kwargs)

    @property
    def encoder_module(self) -> nn.Module:
        return self.encoder if self.train_encoder else self._shared[0]

    @property
    def shares_classifier(self) -> bool:
        """True when the encoder is the classifier itself (its logits are the classifier's)."""
        return not self.train_encoder

    def train(self, mode: bool = True):
        super().train(mode)
        if self.train_encoder:
            self.encoder.eval()  # fine-tuned with frozen BatchNorm statistics
        return self

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        names = [self.feature_layer] + [n for n in self.skip_layers if n]
        with capture_outputs(self.encoder_module, names) as st:
            logits = self.encoder_module(x)
        feat = st[self.feature_layer]
        act = (feat * self.embedding(target)[:, :, None, None]).sum(1, keepdim=True)
        h = self.proj(feat * torch.sigmoid(act - self.model_confidence))
        for stage, name in zip(self.stages, self.skip_layers):
            h = stage(h, st[name] if name else None)
        ab = self.head(h).abs()
        return ab[:, :1] / (ab[:, :1] + ab[:, 1:] + 1e-8), logits

    def save(self, path: str | Path, info: dict | None = None) -> Path:
        """safetensors with the config in its metadata (the encoder only when it was trained)."""
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"config": json.dumps(self.config)}
        meta.update({k: str(v) for k, v in (info or {}).items()})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata=meta)
        return path


def load_saliency_net(classifier: nn.Module, path: str | Path) -> SaliencyNet:
    """Rebuild a trained masking model for ``classifier`` from a file written by ``save``."""
    from safetensors import SafetensorError, safe_open

    from ..models.checkpoints import load_into, read_state_dict

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            config = json.loads((f.metadata() or {})["config"])
    except (OSError, KeyError, ValueError, TypeError, SafetensorError) as e:
        raise ConfigError(f"{path} is not an idlsec RTS file ({e})") from None
    card = getattr(classifier, "card", None)
    for key in ("input_size", "num_classes"):
        theirs = getattr(card, key, None)
        if theirs is not None and config.get(key) is not None and (
                list(theirs) if key == "input_size" else theirs) != config[key]:
            raise ConfigError(f"{path} was trained for {key} {config[key]}, the model has {theirs}")
    net = SaliencyNet(classifier, **config)
    return load_into(net, read_state_dict(path), source=str(path)).to(_device_of(classifier))
