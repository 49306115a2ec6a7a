"""The interpreter contract (one method to override, as in pytorch-grad-cam's BaseCAM):

    maps = interp(x, target=None, *, create_graph=False)   # (N, 1, h, w), min-max per sample

``target``: None (the model's prediction), an int, or LongTensor(N). Subclasses implement
``compute(x, target, create_graph)`` returning the raw (N, 1, h, w) map; the base class validates
the input once, resolves targets, normalises, optionally upsamples, puts the model in eval mode
and restores it. ``compile=True`` (CAM, Grad-CAM, Grad; :mod:`idlsec.compiling`) runs the model's
forward pass compiled with ``torch.compile``, eager where a method has no compiled form (and for
double backward). ``amp="bf16"|"fp16"`` (default None; :mod:`idlsec.precision`): the forward pass
under autocast, the map arithmetic and the returned maps and logits float32 (CAM, Grad-CAM and
Grad do their map arithmetic in float32; ``benchmarks/amp_tolerance.py`` measures the maps'
distance to float32's). With ``create_graph=False`` the result is detached. With ``create_graph=True``
(here and in ``logits_and_maps``, the attacks' entry point) the map is computed under
:func:`~idlsec.interpreters.layers.second_order_context` (the math attention kernel, whose
backward can itself be differentiated: transformers on CPU and GPU) unless the class declares
``second_order = False`` (its map is a forward quantity, as CAM's).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import autocast, f32
from ..validation import check_images, resolve_targets
from .layers import eval_mode, second_order_context


def minmax(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalise each sample of (N, ...) to [0, 1]; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(maps)


@contextmanager
def capture_output(layer: nn.Module):
    """Record ``layer``'s forward output in ``store["out"]``; the hook is always removed."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        store["out"] = output

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


class Interpreter:
    """Base class of every interpreter. Class attributes describe the method."""

    name: ClassVar[str] = "interpreter"
    differentiable: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    second_order: ClassVar[bool] = True   # with create_graph, the map's own backward is differentiated
    compilable: ClassVar[bool] = False    # has a compiled path (compile=True; idlsec.compiling)

    def __init__(self, model: nn.Module, *, upsample: bool = False, normalize: bool = True,
                 compile: bool = False, amp: str | None = None):  # noqa: A002 - the option's name everywhere
        from ..precision import check_amp
        from ..validation import check_bool

        self.amp = check_amp(amp)

        self.model = model
        self.upsample = upsample
        self.normalize = normalize
        self.compile = check_bool("compile", compile)
        if compile and not self.compilable:
            import warnings

            warnings.warn(f"{self.name} has no compiled path; compile=True runs it eager", RuntimeWarning,
                          stacklevel=2)
        self._compile_override: bool | None = None
        card = getattr(model, "card", None)
        self.num_classes = card.num_classes if card is not None else None

    def __call__(self, x: torch.Tensor, target=None, *, create_graph: bool = False) -> torch.Tensor:
        check_images(x)
        with eval_mode(self.model):
            if target is None:
                with torch.no_grad():
                    target = self.model(x).argmax(1)
            target = resolve_targets(target, x.shape[0], x.device, num_classes=self.num_classes)
            with torch.set_grad_enabled(create_graph or torch.is_grad_enabled()), \
                    self._graph_context(create_graph), autocast(x.device, self.amp):
                maps = self.compute(x, target, create_graph=create_graph)
            maps = f32(maps)
        if self.normalize:
            maps = minmax(maps)
        if self.upsample:
            maps = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return maps if create_graph else maps.detach()

    attribute = __call__  # Captum-style alias

    def logits_and_maps(self, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool = True):
        """For attack loops: (logits, normalised maps) from as few passes as the method allows.
        No validation, no mode change, ``target`` must be a LongTensor(N) on x's device."""
        with self._graph_context(create_graph), autocast(x.device, self.amp):
            logits, maps = self.compute_with_logits(x, target, create_graph=create_graph)
        logits, maps = f32(logits), f32(maps)
        return logits, (minmax(maps) if self.normalize else maps)

    @property
    def compiling(self) -> bool:
        """Whether this call takes the compiled path (``compile=True``, or an attack built with
        ``compile=True`` is running: :meth:`compiled_for`)."""
        return self.compile if self._compile_override is None else self._compile_override

    @contextmanager
    def compiled_for(self, on: bool = True):
        """Within this context the compiled path is ``on`` whatever ``compile`` says."""
        before, self._compile_override = self._compile_override, on
        try:
            yield self
        finally:
            self._compile_override = before

    def _graph_context(self, create_graph: bool):
        """The math attention kernel when the map will be differentiated (see the module doc)."""
        return second_order_context(self.model) if create_graph and self.second_order else nullcontext()

    def compute(self, x: torch.Tensor, target: torch.Tensor, *, create_graph: bool) -> torch.Tensor:
        """The raw (N, 1, h, w) map for ``target``. Override this or ``compute_with_logits``."""
        return self.compute_with_logits(x, target, create_graph=create_graph)[1]

    def compute_with_logits(self, x, target, *, create_graph):
        """(logits, raw map); methods whose map comes from the same forward pass override this."""
        if type(self).compute is Interpreter.compute:
            raise NotImplementedError(f"{type(self).__name__} must override compute or compute_with_logits")
        return self.model(x), self.compute(x, target, create_graph=create_graph)

    def _declared(self, explicit, card_field: str):
        """An explicit layer (module or dotted name), else the model card's ``card_field``, else
        None (the interpreter finds the layer itself, see :mod:`.layers`)."""
        if explicit is not None:
            return explicit
        return getattr(getattr(self.model, "card", None), card_field, None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__})"
