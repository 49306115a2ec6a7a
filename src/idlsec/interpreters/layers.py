"""The layers CAM and Grad-CAM need, found on any architecture, and the attention kernel that
second-order attacks need.

Discovery traces one probe input of the model's input size (``torch.rand`` with seed 0, batch 1,
eval mode) with a forward hook on every sub-module. Outputs that are the same tensor object (a
block, its last ReLU, an ``nn.Identity`` after it) form one group, named by the member whose hook
fires last and that is not a pass-through (``nn.Identity``/``nn.Dropout``): ``net.layer4`` rather
than ``net.layer4.2.relu`` for a ResNet, ``net.features.29`` (the in-place ReLU) rather than the
conv before it for a VGG.

- :func:`find_cam_layers` / :func:`cam_layers`: the fc layer is the last ``nn.Linear`` whose output
  *is* the logits; the feature layer is the last 4-D output with ``fc.in_features`` channels and a
  spatial size above 1x1 whose global average pool *is* the fc layer's input on the probe (or
  the pool of its ReLU, DenseNet's head: then ``relu=True``), so ``logits = fc(GAP(features))``.
  The input rather than the output is compared, since a zero-initialised head (torchvision's ViT)
  would make any map pass. Explicit layers are verified the same way. A model that fails (a ViT's ``conv_proj`` + ``heads.head``, VGG's three-layer
  classifier, ConvNeXt's LayerNorm after the pool) gets a :class:`ConfigError` that says why.
- :func:`find_gradcam_layer`: one backward pass from the predicted logit; the layer is the last
  one with a spatial output (an (N, C, h, w) map, Swin's (N, h, w, C), or transformer tokens
  (N, P + h*w, C) of the residual width) whose gradient is non-zero at the spatial positions. On a
  class-token ViT the last block's *output* gets no gradient there (only the class token reaches
  the head), so the layer found is the last block's first LayerNorm (``ln_1`` in torchvision,
  ``norm1`` in timm), the layer pytorch-grad-cam's documentation uses for ViTs.

Reshapes (Grad-CAM's ``reshape=``): ``"vit"`` drops the P prefix tokens (class, register,
distillation) and lays the rest out as an (h, w) grid with h/w the input's aspect ratio (P is the
smallest count for which such a grid exists: 1 for ViT-B/16 at 224, 2 for DeiT-distilled);
``"swin"`` permutes (N, h, w, C) to (N, C, h, w); a callable ``f(act) -> (N, C, h, w)`` is used as
is (pytorch-grad-cam's ``reshape_transform``).

:func:`second_order_context`: PyTorch's fused CPU/GPU attention kernels have no double backward
("derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"),
so maps that are differentiated (``create_graph=True``) are computed under the math kernel.
"""

from __future__ import annotations

import math
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.normalize import get_layer

POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)
PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout2d)
RESHAPES = ("vit", "swin")
MAX_PREFIX_TOKENS = 16

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {key: result}


@contextmanager
def eval_mode(model: nn.Module):
    """Put ``model`` in eval mode and restore on exit the mode each of its modules had (not the
    top module's flag pushed down: a wrapper in train mode around a model in eval mode, or a
    frozen BatchNorm inside a training model, comes back as it was)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training


class CamLayers(NamedTuple):
    feature: str
    fc: str
    relu: bool  # the GAP input is ReLU(feature output)


@contextmanager
def second_order_context(model: nn.Module | None = None):
    """Force the math scaled-dot-product-attention kernel, whose backward is itself differentiable.

    It changes nothing for a model that makes no attention call (a CNN), so it is entered for every
    model (``model`` is accepted for symmetry); attacks enter it through
    ``Interpreter.logits_and_maps`` and ``Interpreter(x, create_graph=True)``."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        yield


# --- tracing -------------------------------------------------------------------------------------
@dataclass
class _Group:
    """Module outputs that are one tensor object, in the order their hooks fired."""

    out: torch.Tensor
    first: int
    names: list[str] = field(default_factory=list)
    modules: list[nn.Module] = field(default_factory=list)

    @property
    def name(self) -> str:
        real = [n for n, m in zip(self.names, self.modules) if not isinstance(m, PASS_THROUGH)]
        return (real or self.names)[-1]

    @property
    def pass_through(self) -> bool:
        return all(isinstance(m, PASS_THROUGH) for m in self.modules)

    @property
    def pooled(self) -> bool:
        return any(isinstance(m, POOLS) for m in self.modules)


def input_size_of(model: nn.Module, input_size=None) -> tuple[int, ...] | None:
    """(C, H, W) from ``input_size`` or the model card, else None (found on the first call)."""
    size = input_size if input_size is not None else getattr(getattr(model, "card", None),
                                                              "input_size", None)
    if size is None:
        return None
    size = tuple(int(v) for v in size)
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"input_size must be (C, H, W), got {size}")
    return size


def _probe(model: nn.Module, input_size) -> torch.Tensor:
    ref = next(iter(list(model.parameters()) + list(model.buffers())), None)
    device = ref.device if ref is not None else torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    return torch.rand((1, *input_size), generator=g).to(device)


def _trace(model: nn.Module, x: torch.Tensor, *, grad: bool):
    """(logits, groups of tensor outputs in creation order, {name: (module, output, order,
    first input)})."""
    fired: list[tuple[str, nn.Module, torch.Tensor]] = []

    def make(name):
        def hook(module, inputs, out):
            if isinstance(out, torch.Tensor):
                first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
                fired.append((name, module, out, first))
        return hook

    handles = [m.register_forward_hook(make(n)) for n, m in model.named_modules() if n]
    try:
        with eval_mode(model), torch.set_grad_enabled(grad):
            logits = model(x.requires_grad_(grad))
    finally:
        for h in handles:
            h.remove()
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ConfigError("layer discovery needs a classifier returning logits (N, classes), got "
                          f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)}")
    groups: dict[int, _Group] = {}
    last: dict[str, tuple] = {}
    for i, (name, module, out, first) in enumerate(fired):
        grp = groups.setdefault(id(out), _Group(out, i))
        grp.names.append(name)
        grp.modules.append(module)
        last[name] = (module, out, i, first)
    return logits, sorted(groups.values(), key=lambda g: g.first), last


def _cached(model, key, fn):
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = fn()
    return per_model[key]


def layer_name(model: nn.Module, layer) -> str:
    """The dotted name of ``layer`` (a name or a sub-module of ``model``)."""
    if isinstance(layer, str):
        get_layer(model, layer)  # raises a ConfigError listing valid names
        return layer
    for n, m in model.named_modules():
        if m is layer:
            return n
    raise ConfigError(f"layer {type(layer).__name__} is not a sub-module of this model")


# --- CAM ------------------------------------------------------------------------------------------
def _gap_error(feats: torch.Tensor, fc_input: torch.Tensor) -> tuple[float, bool]:
    """(smallest |GAP(f) - fc input| over f and ReLU(f), relative to 1e-4 of the input's scale;
    whether ReLU was the better one). The fc input, not its output: a zero-initialised head
    (torchvision's ViT) would make any feature map look right."""
    if fc_input is None or fc_input.shape != feats.shape[:2]:
        return math.inf, False
    scale = 1e-4 * (1.0 + float(fc_input.abs().max()))
    errs = [float((f.mean((2, 3)) - fc_input).abs().max()) / scale for f in (feats, F.relu(feats))]
    return min(errs), errs[1] < errs[0]


def check_gap_head(feats: torch.Tensor, fc_input, source: str, fc_name: str) -> bool:
    """Raise unless GAP(feats) (or GAP(ReLU(feats))) is the fc layer's input; return whether the
    ReLU is needed. ``source`` names the feature layer's argument, for the message."""
    err, relu = _gap_error(feats, fc_input)
    if err > 1:
        raise ConfigError(
            f"CAM cannot apply with {source} and {fc_name!r}: the input of {fc_name!r} is not the "
            f"global average pool of that layer's output (relative error {err * 1e-4:.3g}), so this "
            f"is not a GAP+linear head (a transformer's patch embedding, say); use gradcam, or "
            f"pass the right target_layer= / fc_layer=")
    return relu


def cam_layers(model: nn.Module, input_size, *, target_layer=None, fc_layer=None,
               sources=("target_layer", "fc_layer")) -> CamLayers:
    """The (verified) CAM layers: explicit ones are checked, missing ones are found.
    ``sources`` names where each explicit value came from, for the error messages."""
    size = input_size_of(model, input_size)
    t_name = None if target_layer is None else layer_name(model, target_layer)
    f_name = None if fc_layer is None else layer_name(model, fc_layer)
    key = ("cam", t_name, f_name, size)
    return _cached(model, key, lambda: _cam_layers(model, size, t_name, f_name, sources))


def _cam_layers(model, size, t_name, f_name, sources) -> CamLayers:
    t_src, f_src = (f"{sources[0]}={t_name!r}", f"{sources[1]}={f_name!r}")
    how = "pass target_layer= and fc_layer= to name them, or use gradcam"
    with torch.no_grad():
        logits, groups, last = _trace(model, _probe(model, size), grad=False)
    if f_name is None:
        fcs = [(n, i) for n, (m, out, i, _) in last.items()
               if isinstance(m, nn.Linear) and out.shape == logits.shape
               and torch.allclose(out, logits, rtol=1e-5, atol=1e-6)]
        if not fcs:
            raise ConfigError("CAM cannot apply: no nn.Linear layer of this model outputs its logits "
                              f"(CAM needs global-average-pool + linear as the head; {how})")
        f_name, f_at = max(fcs, key=lambda t: t[1])
    else:
        if f_name not in last:
            raise ConfigError(f"CAM: {f_src} is not called on a forward pass")
        f_at = last[f_name][2]
    fc, fc_input = get_layer(model, f_name), last[f_name][3]
    if not isinstance(fc, nn.Linear):
        raise ConfigError(f"CAM needs a GAP+linear head; {f_src} is a {type(fc).__name__}, "
                          "not nn.Linear")
    if t_name is not None:
        if t_name not in last:
            raise ConfigError(f"CAM: {t_src} is not called on a forward pass")
        out = last[t_name][1]
        if out.dim() != 4 or out.shape[1] != fc.in_features:
            raise ConfigError(f"CAM cannot apply: {t_src} outputs {tuple(out.shape)}, which does not "
                              f"feed a GAP+linear head with {fc.in_features} inputs ({f_name!r})")
        relu = check_gap_head(out, fc_input, t_src, f_name)
        return CamLayers(t_name, f_name, relu)
    cands = [g for g in groups if g.out.dim() == 4 and g.out.shape[1] == fc.in_features
             and g.out.shape[2] * g.out.shape[3] > 1 and g.first < f_at and not g.pass_through]
    tried = []
    for g in reversed(cands):
        err, relu = _gap_error(g.out, fc_input)
        if err <= 1:
            return CamLayers(g.name, f_name, relu)
        tried.append(f"{g.name} ({err * 1e-4:.2g})")
    why = (f"no 4-D output with {fc.in_features} channels comes before it" if not cands else
           "its input is not the global average pool of any earlier 4-D output (relative error: "
           + ", ".join(tried[:3]) + ")")
    raise ConfigError(f"CAM cannot apply: the logits come from {f_name!r} but {why} (CAM needs "
                      f"logits = fc(GAP(features)), e.g. a ResNet or DenseNet, not a ViT or VGG; "
                      f"{how})")


def find_cam_layers(model: nn.Module, input_size=None) -> tuple[str, str]:
    """(feature layer, fc layer) of a GAP+linear classifier, verified on a probe input."""
    found = cam_layers(model, _need_size(model, input_size))
    return found.feature, found.fc


def _need_size(model, input_size):
    size = input_size_of(model, input_size)
    if size is None:
        raise ConfigError("layer discovery needs the input size: pass input_size=(C, H, W)")
    return size


# --- Grad-CAM -------------------------------------------------------------------------------------
def is_nhwc_model(model: nn.Module) -> bool:
    """Swin transformers (timm, torchvision) keep their maps as (N, h, w, C)."""
    return any("swin" in type(m).__name__.lower() for m in model.modules())


def _grid_like(a: int, b: int, height: int, width: int) -> bool:
    return a > 0 and b > 0 and height >= a and abs(height / a - width / b) <= 0.5


def nhwc(model: nn.Module, out: torch.Tensor, hw: tuple[int, int]) -> bool:
    """Whether a 4-D output of ``model`` is (N, h, w, C): a Swin model's, with dims 1-2 (and not
    2-3) laid out like a patch grid of the (H, W) input."""
    return (out.dim() == 4 and _grid_like(out.shape[1], out.shape[2], *hw)
            and not _grid_like(out.shape[2], out.shape[3], *hw) and is_nhwc_model(model))


def token_grid(tokens: int, height: int, width: int) -> tuple[int, int, int] | None:
    """(prefix, h, w): the fewest prefix tokens P such that tokens - P = h*w on a grid with the
    input's aspect ratio (one patch size for both sides); None if there is none."""
    for p in range(min(tokens, MAX_PREFIX_TOKENS + 1)):
        n = tokens - p
        h = max(1, round(math.sqrt(n * height / width)))
        if n % h == 0 and abs(height / h - width / (n // h)) <= 0.5:
            return p, h, n // h
    return None


def to_grid(act: torch.Tensor, kind, hw: tuple[int, int]) -> torch.Tensor:
    """A layer output as (N, C, h, w): ``kind`` None (already), "vit", "swin", or a callable."""
    if callable(kind):
        out = kind(act)
    elif kind == "vit":
        if act.dim() != 3:
            raise ConfigError(f"reshape='vit' needs token outputs (N, tokens, C), got {tuple(act.shape)}")
        grid = token_grid(act.shape[1], *hw)
        if grid is None:
            raise ConfigError(f"reshape='vit': {act.shape[1]} tokens do not form a patch grid of a "
                              f"{hw[0]}x{hw[1]} input; pass reshape= a callable")
        p, h, w = grid
        out = act[:, p:].reshape(act.shape[0], h, w, act.shape[2]).permute(0, 3, 1, 2)
    elif kind == "swin":
        if act.dim() != 4:
            raise ConfigError(f"reshape='swin' needs (N, h, w, C) outputs, got {tuple(act.shape)}")
        out = act.permute(0, 3, 1, 2)
    else:
        out = act
    if not isinstance(out, torch.Tensor) or out.dim() != 4:
        raise ConfigError("Grad-CAM needs a convolutional layer with (N, C, h, w) output (or a "
                          "reshape= for token outputs); got "
                          f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out)}")
    return out


def check_reshape(reshape):
    if reshape is None or callable(reshape) or reshape in RESHAPES:
        return reshape
    raise ConfigError(f"reshape must be None, 'vit', 'swin' or a callable, got {reshape!r}")


def auto_reshape(model: nn.Module, out, hw: tuple[int, int]):
    """The reshape an output needs when none was given: tokens -> "vit", Swin maps -> "swin"."""
    if isinstance(out, torch.Tensor) and out.dim() == 3:
        return "vit"
    if isinstance(out, torch.Tensor) and nhwc(model, out, hw):
        return "swin"
    return None


def find_gradcam_layer(model: nn.Module, input_size=None) -> tuple[str, str | None]:
    """(layer name, reshape: None, "vit" or "swin") for Grad-CAM, from one probe forward+backward."""
    size = _need_size(model, input_size)
    return _cached(model, ("gradcam", size), lambda: _gradcam_layer(model, size))


def _gradcam_layer(model, size):
    x = _probe(model, size)
    logits, groups, _ = _trace(model, x, grad=True)
    h_in, w_in = size[1:]
    tokens = [g for g in groups if g.out.dim() == 3 and g.out.shape[0] == 1]
    width = tokens[-1].out.shape[2] if tokens else None
    cands = []
    for g in groups:
        out = g.out
        if g.pass_through or g.pooled or out.shape[0] != 1 or not out.requires_grad:
            continue
        if out.dim() == 4:
            kind = "swin" if nhwc(model, out, (h_in, w_in)) else None
            hw = out.shape[1:3] if kind else out.shape[2:]
            if hw[0] * hw[1] > 1:
                cands.append((g, kind, slice(None)))
        elif out.dim() == 3 and out.shape[2] == width:
            grid = token_grid(out.shape[1], h_in, w_in)
            if grid is not None and grid[1] * grid[2] > 1:
                cands.append((g, "vit", slice(grid[0], None)))
    if not cands:
        raise ConfigError("Grad-CAM found no layer with a spatial output ((N, C, h, w) maps or "
                          "(N, tokens, C) patch tokens); pass target_layer= (and reshape=)")
    score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    grads = torch.autograd.grad(score, [g.out for g, _, _ in cands], allow_unused=True)
    for (g, kind, spatial), grad in zip(reversed(cands), reversed(grads)):
        if grad is not None and bool((grad[:, spatial] if kind == "vit" else grad).abs().amax() > 0):
            return g.name, kind
    raise ConfigError("Grad-CAM found no spatial layer whose output the predicted logit depends on "
                      "(are the classifier's weights all zero? torchvision's ViT starts with a zero "
                      "head); pass target_layer=")
