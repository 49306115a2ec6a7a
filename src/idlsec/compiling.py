"""The opt-in compiled path (``compile=True`` on white-box attacks and interpreters, ``--compile``
on the CLI, ``compile:`` in suites): the model's forward pass, and with it the backward pass
AOTAutograd derives from it, compiled once with :func:`torch.compile` (Inductor) and reused across
steps and batches.

- :func:`compiled_model` gives, per model, one cached :class:`CompiledModel`: an ``nn.Module`` that
  shares the model's parameters and attributes (``card``, layers) and runs the compiled forward.
  Attacks run their loop on it (``Attack._generate`` swaps it in for the attack's duration).
- :func:`compiled_split` gives, per (model, layer), a compiled *body* (input -> the layer's output)
  and an eager *head* (the layer's output -> logits), split with :mod:`torch.fx`: CAM and
  Grad-CAM take their maps at the split (no hooks inside a compiled graph, which would recompile
  on every call), and Grad-CAM differentiates the small eager head to the layer.
- Double backward (``create_graph=True`` through the model: Grad's smooth-ReLU surrogate) stays
  eager: AOTAutograd does not differentiate its compiled backward.

Eager fallback: when compiling fails (no C compiler, an untraceable model, a backend error) a
``RuntimeWarning`` names the cause once and that model runs eager from then on; an error of the
model itself (a wrong input shape) is raised by the eager re-run, unchanged. Compiled and eager
results agree to float32 rounding (the tests compare PGD and ADV^2 on CAM to 1e-5 on CPU).
Dynamo's default shape handling applies: a second batch size recompiles once with dynamic shapes.
``IDLSEC_COMPILE_BACKEND`` picks another ``torch.compile`` backend (tests: ``aot_eager``)."""

from __future__ import annotations

import os
import warnings
import weakref

import torch
from torch import nn

_CACHE = "_idlsec_compiled"   # on the model's __dict__: {"model": CompiledModel, layer name: split | None}
_CACHED: weakref.WeakSet = weakref.WeakSet()   # the models holding one (for clear_cache)


def _cache(model: nn.Module) -> dict:
    """The model's own cache (it lives and dies with the model; not a submodule, not in state_dict)."""
    _CACHED.add(model)
    return model.__dict__.setdefault(_CACHE, {})


def backend() -> str:
    return os.environ.get("IDLSEC_COMPILE_BACKEND", "inductor")


def _warn(what: str, err: BaseException) -> None:
    first = (str(err).strip().splitlines() or [""])[0][:200]
    warnings.warn(f"torch.compile failed for {what} ({type(err).__name__}: {first}); running it eager",
                  RuntimeWarning, stacklevel=3)


class CompiledModel(nn.Module):
    """``model`` with a compiled forward pass and the eager fallback (see the module doc).
    Attribute reads it does not hold itself go to the model (``card``, submodules)."""

    def __init__(self, model: nn.Module, what: str | None = None):
        super().__init__()
        self.eager = model
        self.what = what or type(model).__name__
        self.failed = False
        self.__dict__["_compiled"] = torch.compile(model, backend=backend())  # not a submodule

    def forward(self, *args, **kwargs):
        if self.failed:
            return self.eager(*args, **kwargs)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any compile failure falls back to eager
            out = self.eager(*args, **kwargs)  # the model's own errors are raised here, unchanged
            self.failed = True
            _warn(self.what, err)
            return out

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["eager"], name)


def compiled_model(model: nn.Module) -> nn.Module:
    """The model's cached :class:`CompiledModel` (the model itself if it is one already)."""
    if isinstance(model, CompiledModel):
        return model
    cache = _cache(model)
    if "model" not in cache:
        cache["model"] = CompiledModel(model)
    return cache["model"]


def split_at(model: nn.Module, layer_name: str):
    """(body, head) GraphModules with ``body(x)`` = the layer's output and ``head(a)`` = the
    logits from it, sharing the model's parameters; None when the model cannot be traced by
    :mod:`torch.fx` or the head needs more than the layer's output (a skip over the layer)."""
    import torch.fx as fx

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return qualname == layer_name or super().is_leaf_module(m, qualname)

    graph = Tracer().trace(model)
    nodes = list(graph.nodes)
    at = [i for i, n in enumerate(nodes) if n.op == "call_module" and n.target == layer_name]
    if len(at) != 1:
        return None
    k = at[0]
    body, env = fx.Graph(), {}
    for n in nodes[: k + 1]:
        env[n] = body.node_copy(n, lambda a: env[a])
    body.output(env[nodes[k]])
    head, env2 = fx.Graph(), {nodes[k]: None}
    env2[nodes[k]] = head.placeholder("features")
    for n in nodes[k + 1:]:
        for a in n.all_input_nodes:
            if a not in env2:
                if a.op != "get_attr":
                    return None
                env2[a] = head.node_copy(a)
        if n.op == "output":
            head.output(fx.map_arg(n.args[0], lambda a: env2[a]))
            break
        env2[n] = head.node_copy(n, lambda a: env2[a])
    return fx.GraphModule(model, body), fx.GraphModule(model, head)


def compiled_split(model: nn.Module, layer_name: str):
    """(compiled body, eager head) at ``layer_name`` (:func:`split_at`), cached per model and
    layer; None (with a warning, once) when the model cannot be split there."""
    per, key = _cache(model), ("split", layer_name)
    if key not in per:
        try:
            parts = split_at(model, layer_name)
            if parts is None:
                raise ValueError(f"the head after {layer_name!r} uses more than that layer's output")
        except Exception as err:  # noqa: BLE001 - fx cannot trace every model: stay eager
            _warn(f"{type(model).__name__} split at {layer_name!r}", err)
            per[key] = None
        else:
            body, head = parts
            per[key] = (CompiledModel(body, f"{type(model).__name__} up to {layer_name!r}"), head)
    return per[key]


def clear_cache() -> None:
    """Forget every compiled model and split (and Dynamo's compiled code)."""
    for model in list(_CACHED):
        model.__dict__.pop(_CACHE, None)
    _CACHED.clear()
    torch._dynamo.reset()
