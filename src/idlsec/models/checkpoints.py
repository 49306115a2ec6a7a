"""Loading weights safely: SHA-256 first, then ``torch.load(weights_only=True)`` or safetensors,
so that no pickled code is ever executed."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import ChecksumError, ConfigError


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (plain or ``{'state_dict': ...}``),
    with any DataParallel ``module.`` prefix removed."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            state = load_file(str(path))
        except Exception as e:
            raise ChecksumError(f"{path}: not a valid safetensors file ({e})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{path}: refused: it is not a plain state dict and idlsec never "
                              f"unpickles code ({first}); save model.state_dict() with torch.save, "
                              "or convert it to .safetensors") from None
        except Exception as e:
            raise ChecksumError(f"{path}: cannot be loaded as a weights-only checkpoint ({e})") \
                from None
        state = None
        if isinstance(obj, dict):
            for key in ("state_dict", "model_state_dict", "model"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
            state = obj
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                                  for v in state.values()):
            raise ChecksumError(f"{path}: does not contain a state dict (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def match_keys(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo the usual wrappers' prefixes: a saved ``NormalizedModel`` (``net.`` plus
    ``normalize.*``) or any single leading component (``model.``) that ``module`` lacks."""
    own = module.state_dict().keys()
    if "normalize.mean" in state and not any(k.startswith("normalize.") for k in own):
        state = {k: v for k, v in state.items() if not k.startswith("normalize.")}
    for _ in range(2):
        if not state or set(state) & set(own):
            break
        heads = {k.split(".", 1)[0] for k in state}
        if len(heads) != 1 or not all("." in k for k in state):
            break
        stripped = {k.split(".", 1)[1]: v for k, v in state.items()}
        if not set(stripped) & set(own):
            break
        state = stripped
    return state


def state_mismatch(module: torch.nn.Module, state: dict[str, torch.Tensor]):
    """(missing, unexpected, [(key, shape in file, shape in model)]); BatchNorm's
    ``num_batches_tracked`` may be missing (old checkpoints)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    return missing, unexpected, shapes


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint"):
    """Load ``state`` strictly; a mismatch is a ConfigError naming the keys and shapes."""
    state = match_keys(module, state)
    missing, unexpected, shapes = state_mismatch(module, state)
    if missing or unexpected or shapes:
        raise ConfigError(f"{source} does not fit the architecture: "
                          f"{describe_mismatch(missing, unexpected, shapes)}")
    module.load_state_dict(state, strict=False)
    return module


def describe_mismatch(missing, unexpected, shapes) -> str:
    parts = []
    if shapes:
        parts.append("shapes differ: " + ", ".join(f"{k} {a} in the file vs {b} in the model"
                                                   for k, a, b in shapes[:4])
                     + (f" (+{len(shapes) - 4} more)" if len(shapes) > 4 else ""))
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(f"{what} {keys[:4]}" + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else ""))
    return "; ".join(parts)


def save_weights(module: torch.nn.Module, path: str | Path, metadata: dict[str, str] | None = None):
    """Save as safetensors (contiguous CPU tensors; metadata values must be strings)."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
