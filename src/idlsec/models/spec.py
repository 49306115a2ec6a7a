"""Model specs: one grammar for every model idlsec loads (API, ``--model``, suites, the lab).

    zoo name                  cifar10-resnet20, fmnist-cnn, ... (``idlsec info``), or register_model
    torchvision:<arch>        any classification model in torchvision.models (resnet50, vit_b_16)
    timm:<name>               any timm model (optional extra: ``pip install 'idlsec[timm]'``)
    path/to/file.py:factory   a callable in a Python file, imported by path, returning an nn.Module
    package.module:factory    the same from an importable module

Options (``load_model``, ``check_model_spec``, ``model_card``) mirror the CLI flags:
``weights`` (a ``.safetensors`` file or a torch state dict read with ``weights_only=True``, never
unpickled code; or ``"random"``), ``num_classes`` (torchvision/timm: the head is built with that
many outputs; a user model: checked against its output), ``input_size`` (C, H, W), ``mean``/``std``
(default: ImageNet's for torchvision, timm's pretrained_cfg, identity for a user factory),
``labels`` (a class-names file, one per line, or ``"imagenet"``: torchvision's offline metadata).

Everything but a zoo model gets a card derived here: name = the spec, ``dataset`` None,
``num_classes`` from a probe forward on ``input_size``, layers None (the interpreters find them)
except the well-known torchvision CNN families, ``reshape`` "vit"/"swin" for transformers.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, IdlsecError, ResourceError, unknown_name
from .checkpoints import describe_mismatch, match_keys, read_state_dict, state_mismatch
from .normalize import IMAGENET_MEAN, IMAGENET_STD, NormalizedModel
from .zoo import CARDS, ModelCard, _weights_path

GRAMMAR = ("torchvision:<arch>", "timm:<name>", "path/to/file.py:factory", "package.module:factory")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".th")


@dataclass(frozen=True)
class ParsedSpec:
    kind: str  # "zoo" | "torchvision" | "timm" | "file" | "module"
    target: str  # zoo name, torchvision arch, timm name, file path or module name
    factory: str | None = None

    def __str__(self):
        return self.target if self.factory is None else f"{self.target}:{self.factory}"


def parse_spec(spec: str) -> ParsedSpec:
    """Which of the five forms ``spec`` is (syntax only; ``check_model_spec`` checks names)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec in CARDS:
        return ParsedSpec("zoo", spec)
    for kind in ("torchvision", "timm"):
        if spec.startswith(kind + ":"):
            name = spec[len(kind) + 1 :]
            if not name:
                raise ConfigError(f"model spec {spec!r} names no model: {kind}:<name>")
            return ParsedSpec(kind, name)
    if ":" in spec:
        left, right = spec.rsplit(":", 1)
        if not _IDENT.match(right):
            raise ConfigError(
                f"model spec {spec!r}: {right!r} is not a factory name (a Python "
                "identifier): use path/to/file.py:factory or package.module:factory"
            )
        if left.endswith(".py") or "/" in left or os.sep in left:
            return ParsedSpec("file", left, right)
        if _IDENT.match(left):
            return ParsedSpec("module", left, right)
        raise ConfigError(f"model spec {spec!r}: {left!r} is neither a .py file nor a module name")
    if spec.endswith(".py"):
        raise ConfigError(
            f"model spec {spec!r} names no factory: use {spec}:FACTORY (a function or "
            "class in the file that returns the nn.Module)"
        )
    if spec.endswith(_WEIGHT_SUFFIXES):
        raise ConfigError(
            f"{spec!r} is a weights file, not a model: give the architecture with "
            f"--model SPEC ({', '.join(GRAMMAR)} or a zoo name) and the file with "
            f"--weights {spec}"
        )
    hint = ""
    if _torchvision_names(required=False) and spec in _torchvision_names():
        hint = f" (did you mean torchvision:{spec}?)"
    err = unknown_name("model", spec, CARDS)
    return _raise(ConfigError(f"{err}; or {', '.join(GRAMMAR)}{hint}"))


def _raise(err):
    raise err


# ---------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    weights: str | None = None
    num_classes: int | None = None
    input_size: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: str | None = None
    device: str = "cpu"


def _numbers(value, kind, what, flag):
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,x\s]+", value.strip()) if p]
    else:
        try:
            parts = list(value)
        except TypeError:
            parts = [value]
    try:
        out = tuple(kind(p) for p in parts)
        if kind is int and any(float(p) != int(p) for p in parts):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be numbers ({flag}), got {value!r}") from None
    return out


def options(
    *,
    weights=None,
    num_classes=None,
    input_size=None,
    mean=None,
    std=None,
    labels=None,
    device="cpu",
) -> Options:
    """The load options, validated and normalised (strings like "3,224,224" accepted)."""
    if weights is not None:
        weights = str(weights)
        if weights != "random" and not Path(weights).is_file():
            raise ConfigError(f"weights file {weights} does not exist (--weights PATH|random)")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int | str):
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        try:
            num_classes = int(num_classes)
        except ValueError:
            raise ConfigError(
                f"num_classes must be a positive integer, got {num_classes!r}"
            ) from None
        if num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes}")
    if input_size is not None:
        input_size = _numbers(input_size, int, "input_size", "--input-size C,H,W")
        if len(input_size) != 3 or min(input_size) < 1:
            raise ConfigError(
                f"input_size must be three positive integers C,H,W "
                f"(--input-size 3,224,224), got {input_size}"
            )
    for name in ("mean", "std"):
        value = locals()[name]
        if value is None:
            continue
        value = _numbers(value, float, name, f"--{name} a,b,c")
        if not value:
            raise ConfigError(f"{name} must not be empty")
        if input_size is not None and len(value) not in (1, input_size[0]):
            raise ConfigError(
                f"{name} has {len(value)} values but the input has {input_size[0]} "
                f"channels (--input-size {','.join(map(str, input_size))})"
            )
        if name == "std" and min(value) <= 0:
            raise ConfigError(f"std must be positive, got {value}")
        if name == "mean":
            mean = value
        else:
            std = value
    if (
        mean is not None
        and std is not None
        and len(mean) != len(std)
        and 1 not in (len(mean), len(std))
    ):
        raise ConfigError(f"mean has {len(mean)} values and std {len(std)}")
    if labels is not None:
        labels = str(labels)
        if labels != "imagenet" and not Path(labels).is_file():
            raise ConfigError(
                f"labels file {labels} does not exist (--labels FILE|imagenet: a "
                "class-names file, one name per line)"
            )
    from ..validation import check_device

    check_device(device)
    return Options(weights, num_classes, input_size, mean, std, labels, str(device))


def read_labels(labels: str | None) -> tuple[str, ...] | None:
    """Class names: ``"imagenet"`` (torchvision's metadata, offline) or a file, one per line."""
    if labels is None:
        return None
    if labels == "imagenet":
        tvm = _torchvision()
        return tuple(tvm.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    lines = Path(labels).read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = tuple(line.strip() for line in lines)
    if not names or not all(names):
        raise ConfigError(
            f"labels file {labels}: one non-empty class name per line, in class-index order"
        )
    return names


# ---------------------------------------------------------------------------------- builders


def _torchvision():
    try:
        import torchvision.models as tvm
    except ImportError:
        raise ConfigError(
            "torchvision models need the optional extra: pip install 'idlsec[torchvision]'"
        ) from None
    return tvm


def _torchvision_names(required=True) -> list[str]:
    try:
        tvm = _torchvision()
    except ConfigError:
        if required:
            raise
        return []
    return tvm.list_models(module=tvm)


def _timm():
    try:
        import timm
    except ImportError:
        raise ConfigError(
            "timm models need the optional extra: pip install 'idlsec[timm]'"
        ) from None
    return timm


def _tv_hints(arch: str, net: nn.Module) -> dict:
    """Known layers of torchvision's CNN families (the old zoo cards); others are found."""
    if re.match(r"(resnet|resnext|wide_resnet)\d", arch):
        return {"cam_layer": "net.layer4", "fc_layer": "net.fc", "gradcam_layer": "net.layer4"}
    if arch.startswith("densenet"):
        return {
            "cam_layer": "net.features",
            "fc_layer": "net.classifier",
            "gradcam_layer": "net.features",
            "cam_relu": True,
        }
    if arch.startswith("vgg"):  # no GAP+FC head: CAM does not apply; Grad-CAM on the last ReLU
        return {"gradcam_layer": f"net.features.{len(net.features) - 2}"}
    return {}


def _reshape_of(net: nn.Module) -> str | None:
    names = {c.__name__ for c in type(net).__mro__}
    if names & {"SwinTransformer", "SwinTransformerV2"}:
        return "swin"
    if names & {"VisionTransformer", "VisionTransformerDistilled", "Eva", "Beit"}:
        return "vit"
    return None


@dataclass
class _Plan:
    """How to build a network and what its card says before the probe."""

    build: Callable[[], nn.Module]
    input_size: tuple[int, int, int] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    default_weights: Callable[[], Path | None]  # weights=None: a file, or None for "as built"
    hints: Callable[[nn.Module], dict]
    notes: str = ""


def _plan(parsed: ParsedSpec, opts: Options) -> _Plan:
    if parsed.kind == "torchvision":
        return _torchvision_plan(parsed.target, opts)
    if parsed.kind == "timm":
        return _timm_plan(parsed.target, opts)
    return _user_plan(parsed, opts)


def _torchvision_plan(arch: str, opts: Options) -> _Plan:
    tvm = _torchvision()
    names = tvm.list_models(module=tvm)
    if arch not in names:
        raise unknown_name("torchvision classification model", arch, names)
    c, h, w = opts.input_size or ((3, 299, 299) if arch == "inception_v3" else (3, 224, 224))
    if c != 3:
        raise ConfigError(
            f"torchvision:{arch} takes 3-channel images, not input_size "
            f"{(c, h, w)}: keep C=3 (grayscale folders are converted to RGB)"
        )
    kwargs = {} if opts.num_classes is None else {"num_classes": opts.num_classes}
    if arch.startswith("vit_") and opts.input_size:
        if h != w:
            raise ConfigError(f"torchvision:{arch} takes square images; input_size {(c, h, w)}")
        kwargs["image_size"] = h

    def build():
        return tvm.get_model(arch, weights=None, **kwargs)

    def default_weights():
        return _torchvision_cached(arch)

    return _Plan(
        build,
        (c, h, w),
        IMAGENET_MEAN,
        IMAGENET_STD,
        default_weights,
        lambda net: _tv_hints(arch, net),
        notes="torchvision; weights: --weights PATH, torchvision's own file in the torch "
        "hub cache, or random",
    )


def _torchvision_cached(arch: str) -> Path:
    """torchvision's pretrained file if it is already in the torch hub cache (no download),
    its SHA-256 prefix (in the file name) verified, DEFAULT weights first; else
    ``<cache>/models/torchvision/<arch>.pth``."""
    tvm = _torchvision()
    enum = tvm.get_model_weights(arch)
    members = [enum.DEFAULT] + [m for m in enum if m is not enum.DEFAULT]
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for member in members:
        path = folder / os.path.basename(member.url)
        if path.is_file():
            _check_hash_prefix(path)
            return path
    from ..data.resolve import cache_dir

    legacy = cache_dir() / "models" / "torchvision" / f"{arch}.pth"
    if legacy.is_file():
        return legacy
    raise ResourceError(
        f"no weights for torchvision:{arch}: pass --weights PATH (weights=PATH), "
        f"put torchvision's {os.path.basename(enum.DEFAULT.url)} in {folder} "
        f"(or {legacy}), or use --weights random"
    )


def _check_hash_prefix(path: Path):
    from ..data.resolve import file_digest
    from ..errors import ChecksumError

    m = re.search(r"-([a-f0-9]{6,})\.", path.name)
    if m and not file_digest(path).startswith(m.group(1)):
        raise ChecksumError(f"{path}: sha256 does not start with {m.group(1)} (a corrupt download)")


def _timm_plan(name: str, opts: Options) -> _Plan:
    timm = _timm()
    if not timm.is_model(name):
        close = (
            timm.list_models(name + "*")
            or difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.6)
        )[:8]
        raise ConfigError(
            f"unknown timm model {name!r}"
            + (f"; close: {', '.join(close)}" if close else "")
            + " (all names: python -c 'import timm; print(timm.list_models())')"
        )
    cfg = timm.models.get_pretrained_cfg(name)
    cfg = cfg.to_dict() if cfg is not None else {}
    default = tuple(cfg.get("input_size") or (3, 224, 224))
    size = opts.input_size or default
    kwargs = {"pretrained": False}
    if opts.num_classes is not None:
        kwargs["num_classes"] = opts.num_classes
    if size[0] != 3:
        kwargs["in_chans"] = size[0]
    mean = tuple(cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(cfg.get("std") or IMAGENET_STD)
    if size[0] != len(mean):
        mean, std = (sum(mean) / len(mean),) * size[0], (sum(std) / len(std),) * size[0]

    def build():
        if tuple(size[1:]) != tuple(default[1:]):
            try:
                return timm.create_model(name, img_size=tuple(size[1:]), **kwargs)
            except TypeError as e:
                if "img_size" not in str(e):
                    raise
        return timm.create_model(name, **kwargs)

    def default_weights():
        return _timm_cached(name, cfg)

    return _Plan(
        build,
        tuple(size),
        mean,
        std,
        default_weights,
        lambda net: {},
        notes="timm; weights: --weights PATH, timm's model.safetensors in the Hugging Face "
        "cache, or random",
    )


def _timm_cached(name: str, cfg: dict) -> Path:
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            path = try_to_load_from_cache(hub_id, "model.safetensors")
            if isinstance(path, str) and Path(path).is_file():
                return Path(path)
        except ImportError:
            pass
    raise ResourceError(
        f"no weights for timm:{name}: pass --weights PATH (a .safetensors file or a "
        f"state dict; e.g. model.safetensors of {hub_id or 'the timm hub model'}) "
        "or use --weights random"
    )


def _import_file(path: str):
    file = Path(path)
    if file.suffix != ".py":
        raise ConfigError(f"model file {path} must be a .py file (path/to/file.py:factory)")
    if not file.is_file():
        raise ConfigError(f"model file {path} does not exist (path/to/file.py:factory)")
    file = file.resolve()
    name = "idlsec_user_" + re.sub(r"\W", "_", str(file))
    module_spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(file.parent))  # the file may import its neighbours
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        raise ConfigError(f"cannot import model file {path}: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(str(file.parent))
    return module


def _import_module(name: str):
    added = os.getcwd() not in sys.path
    if added:  # the console script does not put the working directory on the path
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(name)
    except Exception as e:
        raise ConfigError(
            f"cannot import module {name} (package.module:factory): {type(e).__name__}: {e}"
        ) from e
    finally:
        if added:
            sys.path.remove(os.getcwd())


def _factory(parsed: ParsedSpec):
    module = _import_file(parsed.target) if parsed.kind == "file" else _import_module(parsed.target)
    obj = module
    for part in parsed.factory.split("."):
        if not hasattr(obj, part):
            names = sorted(
                n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
            )
            raise ConfigError(
                f"{parsed.target} has no {parsed.factory!r}; its callables: "
                f"{', '.join(names) or 'none'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(
            f"{parsed} is not callable: the factory must be a function or class that "
            "returns an nn.Module"
        )
    return obj


def _user_plan(parsed: ParsedSpec, opts: Options) -> _Plan:
    factory = _factory(parsed)
    wrapped: dict = {}

    def build():
        try:
            net = factory()
        except IdlsecError:
            raise
        except Exception as e:
            raise ConfigError(
                f"model factory {parsed} raised {type(e).__name__}: {e} (it is called "
                "with no arguments)"
            ) from e
        if isinstance(net, NormalizedModel):  # with_normalization(...) inside the factory
            wrapped["mean"] = tuple(net.normalize.mean.flatten().tolist())
            wrapped["std"] = tuple(net.normalize.std.flatten().tolist())
            net = net.net
        if not isinstance(net, nn.Module):
            raise ConfigError(
                f"model factory {parsed} returned {type(net).__name__}, not an nn.Module"
            )
        return net

    return _Plan(
        build,
        opts.input_size,
        None,
        None,
        lambda: None,
        lambda net: {"_wrapped": dict(wrapped)},
        notes="user model: weights as the factory builds them unless --weights is given",
    )


# ---------------------------------------------------------------------------------- loading


def _load_weights(net: nn.Module, path: Path, spec: str, opts: Options):
    state = match_keys(net, read_state_dict(path))
    if re.match(r"torchvision:densenet", spec):  # torchvision's old key names (its own fix)
        pat = re.compile(
            r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|"
            r"running_mean|running_var))$"
        )
        state = {(pat.sub(r"\1\2", k) if pat.match(k) else k): v for k, v in state.items()}
    missing, unexpected, shapes = state_mismatch(net, state)
    if missing or unexpected or shapes:
        raise ConfigError(
            f"weights {path} do not fit {spec}: "
            f"{describe_mismatch(missing, unexpected, shapes)}"
            f"{_mismatch_fix(net, shapes, opts)}"
        )
    net.load_state_dict(state, strict=False)


def _mismatch_fix(net: nn.Module, shapes, opts: Options) -> str:
    """Which flag fixes a shape mismatch: the class count (the head) or the input size."""
    if not shapes:
        return " (the file is for another architecture)"
    keys = list(net.state_dict())
    head = keys[-1].rsplit(".", 1)[0] if keys else ""
    if all(k.rsplit(".", 1)[0] == head for k, _, _ in shapes):
        k_file = shapes[0][1][0]
        if opts.num_classes is not None:
            return (
                f". The file's head has {k_file} classes but --num-classes {opts.num_classes} "
                f"(num_classes={opts.num_classes}) was given: drop it to use the file's head, "
                f"or pass weights trained for {opts.num_classes} classes"
            )
        return (
            f". The file's head has {k_file} classes: pass --num-classes {k_file} "
            f"(num_classes={k_file})"
        )
    if any("pos_embed" in k or "relative_position" in k for k, _, _ in shapes):
        return (
            ". The position embeddings depend on the image size: pass the size the weights "
            "were trained at with --input-size C,H,W (input_size=...)"
        )
    return " (the file is for another architecture or width)"


def _probe(model: nn.Module, input_size, spec: str, device) -> int:
    x = torch.rand(1, *input_size, generator=torch.Generator().manual_seed(0)).to(device)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ConfigError(
            f"{spec} does not run on a {tuple(x.shape)} input ({type(e).__name__}: "
            f"{first}): pass the input size it takes with --input-size C,H,W "
            "(input_size=(C, H, W))"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"{spec} must return logits of shape (N, num_classes); on a "
            f"{tuple(x.shape)} input it returned {got}"
        )
    return int(out.shape[1])


def _resolve(spec: str, opts: dict):
    parsed = parse_spec(spec)
    return parsed, options(**opts)


def _zoo_card(name: str, opts: Options) -> ModelCard:
    card = CARDS[name]
    if opts.num_classes is not None and opts.num_classes != card.num_classes:
        raise ConfigError(
            f"zoo model {name} has {card.num_classes} classes, not --num-classes {opts.num_classes}"
        )
    if opts.input_size is not None and tuple(opts.input_size) != tuple(card.input_size):
        raise ConfigError(
            f"zoo model {name} takes input_size {tuple(card.input_size)}, not "
            f"{tuple(opts.input_size)}: drop --input-size"
        )
    for field in ("mean", "std"):
        value = getattr(opts, field)
        if value is not None and tuple(value) != tuple(getattr(card, field)):
            raise ConfigError(
                f"zoo model {name} normalises with {field} {getattr(card, field)}: drop --{field}"
            )
    classes = read_labels(opts.labels)
    if classes is not None:
        _check_classes(classes, card.num_classes, name, opts.labels)
        card = dataclasses.replace(card, classes=classes)
    return card


def _check_classes(classes, num_classes: int, spec: str, labels: str):
    if len(classes) != num_classes:
        raise ConfigError(
            f"--labels {labels} has {len(classes)} class names but {spec} has {num_classes} classes"
        )


def check_model_spec(spec: str, **opts) -> None:
    """Cheap validation of a spec and its options (names, files, shapes); builds nothing.
    Raises ConfigError with the fix."""
    parsed, o = _resolve(spec, opts)
    if parsed.kind == "zoo":
        _zoo_card(parsed.target, o)
        return
    if parsed.kind == "torchvision":
        _torchvision_plan(parsed.target, o)
    elif parsed.kind == "timm":
        _timm_plan(parsed.target, o)
    else:
        _factory(parsed)
    classes = read_labels(o.labels)
    if classes is not None and o.num_classes is not None:
        _check_classes(classes, o.num_classes, spec, o.labels)


def _build(spec: str, parsed: ParsedSpec, o: Options, *, load: bool):
    """(NormalizedModel on o.device in eval mode, card) for a non-zoo spec."""
    plan = _plan(parsed, o)
    try:
        net = plan.build()
    except IdlsecError:
        raise
    except Exception as e:  # the library refused the options (an image size, a class count)
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ConfigError(
            f"cannot build {spec} with {_given(o)} ({type(e).__name__}: {first})"
        ) from None
    hints = plan.hints(net)
    wrapped = hints.pop("_wrapped", {})
    input_size = plan.input_size or o.input_size or _size_attr(net)
    if input_size is None:
        raise ConfigError(
            f"{spec}: pass the input size the model takes with --input-size C,H,W "
            "(input_size=(C, H, W)), or give the module an input_size attribute"
        )
    input_size = tuple(int(v) for v in input_size)
    c = input_size[0]
    mean = o.mean or wrapped.get("mean") or plan.mean or (0.0,) * c
    std = o.std or wrapped.get("std") or plan.std or (1.0,) * c
    for name, value in (("mean", mean), ("std", std)):
        if len(value) not in (1, c):
            raise ConfigError(f"{name} has {len(value)} values but the input has {c} channels")
    if load and o.weights != "random":
        path = Path(o.weights) if o.weights is not None else plan.default_weights()
        if path is not None:
            _load_weights(net, path, spec, o)
    elif load:
        _no_zero_heads(net)
    model = NormalizedModel(net, tuple(mean), tuple(std)).to(o.device).eval()
    num_classes = _probe(model, input_size, spec, o.device)
    if o.num_classes is not None and num_classes != o.num_classes:
        raise ConfigError(
            f"{spec} outputs {num_classes} classes but --num-classes {o.num_classes} "
            f"(num_classes={o.num_classes}) was given"
        )
    classes = read_labels(o.labels)
    if classes is not None:
        _check_classes(classes, num_classes, spec, o.labels)
    card = ModelCard(
        name=spec,
        dataset=None,
        num_classes=num_classes,
        input_size=input_size,
        mean=tuple(mean),
        std=tuple(std),
        build=plan.build,
        classes=classes,
        reshape=_reshape_of(net),
        notes=plan.notes,
        **hints,
    )
    model.card = card
    return model, card


def _given(o: Options) -> str:
    flags = []
    if o.num_classes is not None:
        flags.append(f"--num-classes {o.num_classes}")
    if o.input_size is not None:
        flags.append(f"--input-size {','.join(map(str, o.input_size))}")
    return " ".join(flags) or "the default options"


def _size_attr(net: nn.Module):
    size = getattr(net, "input_size", None)
    if size is None:
        return None
    size = _numbers(size, int, "the module's input_size attribute", "(C, H, W)")
    if len(size) != 3:
        raise ConfigError(f"the module's input_size attribute must be (C, H, W), got {size}")
    return size


def _finish(model: nn.Module) -> NormalizedModel:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_model(
    spec: str,
    *,
    weights=None,
    num_classes=None,
    input_size=None,
    mean=None,
    std=None,
    labels=None,
    device="cpu",
) -> NormalizedModel:
    """The classifier named by ``spec`` (see the module docstring), normalisation inside, in eval
    mode with frozen parameters, ``.card`` set.

    Zoo models load verified weights (SHA-256) by default; ``weights``: an explicit file, or
    ``"random"`` (an untrained network: timing, tests). Every error is a ConfigError/ResourceError
    that says which option fixes it, raised before any long work."""
    parsed, o = _resolve(
        spec,
        dict(
            weights=weights,
            num_classes=num_classes,
            input_size=input_size,
            mean=mean,
            std=std,
            labels=labels,
            device=device,
        ),
    )
    if parsed.kind == "zoo":
        card = _zoo_card(parsed.target, o)
        net = card.build()
        if o.weights != "random":
            path = _weights_path(card, o.weights)
            state = read_state_dict(path)
            from .checkpoints import load_into

            load_into(net, state, source=str(path))
        return _finish(NormalizedModel(net, card.mean, card.std, card=card).to(o.device))
    model, _ = _build(spec.strip(), parsed, o, load=True)
    return _finish(model)


def _no_zero_heads(net) -> None:
    """``weights="random"``: a linear layer initialised at zero (torchvision's ViT head) gets
    ``nn.Linear``'s default initialisation, else every logit is constant and every gradient and
    map is zero."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear) and not m.weight.any():
                m.reset_parameters()


_CARD_CACHE: dict = {}


def model_card(spec: str, **opts) -> ModelCard:
    """The zoo card, or the card derived for any other spec (built with random weights and probed
    once on ``input_size``; cached per spec and options)."""
    parsed, o = _resolve(spec, opts)
    if parsed.kind == "zoo":
        return _zoo_card(parsed.target, o)
    key = (spec.strip(), dataclasses.replace(o, weights=None, device="cpu"))
    if parsed.kind == "file":
        key += (Path(parsed.target).stat().st_mtime_ns if Path(parsed.target).is_file() else 0,)
    if key not in _CARD_CACHE:
        _, card = _build(
            spec.strip(), parsed, dataclasses.replace(o, weights="random", device="cpu"), load=False
        )
        _CARD_CACHE[key] = card
    return _CARD_CACHE[key]


def get_card(name: str) -> ModelCard:
    """The zoo card of ``name``, or the card derived for any other model spec (``model_card``)."""
    return CARDS[name] if name in CARDS else model_card(name)
