"""One attack step captured in a CUDA graph and replayed (``cuda_graph=True`` on PGD, ADV^2,
AdvEdge, AdvEdge+; ``--cuda-graph`` on the CLI, ``settings.cuda_graph`` in suites; issue 19 §2).

An attack's loop stays as it is; it calls its step through :func:`graphed`, which returns the step
itself or its graphed replay. A step is a function of tensors (and float scalars, e.g. ADV^2's ``c``)
that returns a tensor or a tuple of tensors: forward, loss, backward to the input, update and
projection, with no host synchronisation. On the first call with CUDA tensors of given shapes it

1. copies the arguments into static input buffers (floats into 0-dim float32 tensors),
2. runs the step :data:`WARMUP` times on a side stream (cuDNN/cuBLAS choose their kernels there),
3. captures one call in a :class:`torch.cuda.CUDAGraph` (its own memory pool),

and then, on every call, copies the arguments into the static buffers (a tensor is skipped when it
is the one loaded last and unchanged since), replays the graph and returns clones of the static
outputs (the next replay overwrites them). New shapes, dtypes, devices or another ``key`` (the
attack's parameters, its model and interpreter) recapture; one graph per step is kept.

Fallback, as :mod:`idlsec.compiling`'s: on a CPU tensor, for a step that cannot be captured (a
reason given by the attack: Adam frameworks, MASK, a seeded random draw per step) or when the
capture fails, the ordinary step runs, and a ``RuntimeWarning`` says why, once per attack. The
step's own errors (a wrong input shape) are raised by the eager re-run, unchanged. Replays agree
with the eager step to float32 rounding (the CUDA test: 1e-5 over a few steps); the kernels are
the eager ones, only their launches are recorded."""

from __future__ import annotations

import functools
import warnings

import torch

WARMUP = 3
_CACHE = "_idlsec_cuda_graphs"   # on the owner's __dict__: {step name: GraphedStep, "warned": bool}


def _cache(owner) -> dict:
    return owner.__dict__.setdefault(_CACHE, {})


def warn_once(owner, message: str) -> None:
    """A ``RuntimeWarning`` with ``message``, at most once per owner (attack)."""
    cache = _cache(owner)
    if not cache.get("warned"):
        cache["warned"] = True
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _sig(a):
    if isinstance(a, torch.Tensor):
        return ("tensor", tuple(a.shape), a.dtype, a.device)
    if isinstance(a, float):
        return ("float",)
    return ("const", a)   # None, ints, strings: part of the graph's identity


def _device(args):
    return next((a.device for a in args if isinstance(a, torch.Tensor)), None)


class GraphedStep:
    """The graph of one step (see the module doc); ``captures`` / ``replays`` count its uses."""

    def __init__(self, owner, what: str):
        self.owner, self.what = owner, what
        self.sig = None
        self.graph = self.static_in = self.static_out = self.loaded = None
        self.failed = False
        self.captures = self.replays = 0

    def __call__(self, fn, key, *args):
        device = _device(args)
        if self.failed or device is None or device.type != "cuda":
            if not self.failed:
                warn_once(self.owner, f"cuda_graph=True needs CUDA tensors ({self.what} got {device}); "
                                      "running the ordinary step")
            return fn(*args)
        sig = (key, tuple(_sig(a) for a in args))
        if sig != self.sig:
            try:
                self._capture(fn, args, device)
            except Exception as err:  # noqa: BLE001 - any capture failure falls back to the eager step
                self.release()
                self.failed = True
                first = (str(err).strip().splitlines() or [""])[0][:200]
                out = fn(*args)  # the step's own errors are raised here, unchanged
                warn_once(self.owner, f"CUDA graph capture failed for {self.what} ({type(err).__name__}: "
                                      f"{first}); running the ordinary step")
                return out
            self.sig = sig
        else:
            self._load(args)
        self.graph.replay()
        self.replays += 1
        return self._outputs()

    def _load(self, args):
        for i, (slot, a) in enumerate(zip(self.static_in, args)):
            if isinstance(a, torch.Tensor):
                last = self.loaded[i]
                if last is None or last[0] is not a or last[1] != a._version:
                    slot.copy_(a)
                    self.loaded[i] = (a, a._version)
            elif isinstance(a, float):
                if self.loaded[i] != a:
                    slot.fill_(a)
                    self.loaded[i] = a

    def _capture(self, fn, args, device):
        self.release()
        self.static_in = [a.detach().clone() if isinstance(a, torch.Tensor)
                          else torch.full((), a, dtype=torch.float32, device=device) if isinstance(a, float)
                          else a for a in args]
        self.loaded = [(a, a._version) if isinstance(a, torch.Tensor) else a if isinstance(a, float) else None
                       for a in args]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                fn(*self.static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(*self.static_in)
        self.graph, self.static_out = graph, out
        self.captures += 1

    def _outputs(self):
        out = self.static_out
        if isinstance(out, torch.Tensor):
            return out.clone()
        return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in out)

    def release(self) -> None:
        """Drop the graph and its buffers (a later call recaptures)."""
        self.sig = self.graph = self.static_in = self.static_out = self.loaded = None


def graphed(owner, name: str, fn, key=(), *, blocker: str | None = None):
    """``fn`` called through ``owner``'s cached :class:`GraphedStep` ``name``; with ``blocker`` (why
    this step cannot be captured) ``fn`` itself, after a one-time warning."""
    if blocker is not None:
        warn_once(owner, f"cuda_graph=True does not apply to {blocker}; running the ordinary step")
        return fn
    cache = _cache(owner)
    step = cache.get(name)
    if step is None:
        step = cache[name] = GraphedStep(owner, f"{type(owner).__name__}'s {name} step")
    return functools.partial(step, fn, key)


def steps_of(owner) -> dict:
    """The owner's :class:`GraphedStep` objects by name (tests, benchmarks)."""
    return {k: v for k, v in _cache(owner).items() if isinstance(v, GraphedStep)}


def release(owner) -> None:
    """Free every graph the owner holds."""
    for step in steps_of(owner).values():
        step.release()
