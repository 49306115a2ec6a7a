"""The lab's models: which models it offers, how each one is loaded, and which image sources each
can run on.

``idlsec serve`` without models offers every zoo model whose weights can be had (packaged, in the
cache or the mirror, or downloadable when downloads are allowed): nothing it lists fails for want
of weights. ``--model SPEC`` (repeatable, any spec ``load_model`` accepts, each with its own
options) or ``--models-file FILE`` replace that list; those models are loaded when the server
starts, so a wrong spec, a missing weights file or a class-count mismatch stops it with the
loader's message instead of failing a job later.

Each model runs on the built-in dataset its weights were trained on (a zoo card's ``dataset``), on
the image folders given with it (``datasets: [folder:DIR]``, resized to the model's input and
converted to its channels), and on uploads (resized likewise)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import DATASETS, load_dataset
from ..data.resolve import cache_dir, mirror_dir, offline
from ..errors import ConfigError, IdlsecError, ResourceError, unknown_name
from ..models import get_card, load_model, model_names

# the options of one model: load_model's keyword arguments, the lab's name, its image sources
LOAD_OPTIONS = ("weights", "num_classes", "input_size", "mean", "std", "labels")
ENTRY_KEYS = ("model", "name", *LOAD_OPTIONS, "datasets", "image_labels")


@dataclass(frozen=True)
class Folder:
    """An image folder offered with one model: read at that model's input size and channels."""

    path: str
    size: tuple[int, int]
    channels: int
    image_labels: str | None = None
    class_names: tuple[str, ...] | None = None


@dataclass
class ModelEntry:
    """One model the lab offers. ``name`` is what the lab calls it (the spec unless named)."""

    spec: str
    name: str = ""
    options: dict = field(default_factory=dict)  # load_model(spec, **options)
    datasets: tuple[str, ...] = ()                # built-in names or folder:DIR, from the user
    image_labels: str | None = None               # for its folders: subfolders | none | FILE.csv

    def __post_init__(self):
        self.name = self.name or self.spec


def entry_from_dict(d: dict, *, base: Path | None = None, where: str = "") -> ModelEntry:
    """A models-file item (or the CLI options of one ``--model``) -> ModelEntry. Unknown keys are
    errors naming the valid ones; relative paths (weights, labels, folders, CSV) are relative to
    ``base`` (the models file's folder)."""
    at = f"{where}: " if where else ""
    if not isinstance(d, dict):
        raise ConfigError(f"{at}each model must be a mapping with a 'model' key, got {d!r}")
    unknown = sorted(set(d) - set(ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{at}unknown key(s) {unknown}; valid: {list(ENTRY_KEYS)}")
    spec = d.get("model")
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"{at}'model' must be a model spec (a zoo name, torchvision:<arch>, "
                          f"timm:<name>, path/to/file.py:factory, package.module:factory), got {spec!r}")

    def path(value):
        if base is None or not isinstance(value, str) or value in ("random", "imagenet"):
            return value
        return str(base / value) if not os.path.isabs(value) else value

    opts = {k: path(d[k]) if k in ("weights", "labels") else d[k]
            for k in LOAD_OPTIONS if d.get(k) is not None}
    raw = d.get("datasets") or []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise ConfigError(f"{at}'datasets' must be a list of dataset specs, got {raw!r}")
    datasets = []
    for s in raw:
        if s.startswith("folder:"):
            s = "folder:" + path(s.split(":", 1)[1])
        elif s not in DATASETS:
            raise unknown_name("dataset", s, [*DATASETS, "folder:DIR"])
        datasets.append(s)
    labels = d.get("image_labels")
    if labels not in (None, "subfolders", "none"):
        labels = path(str(labels))
    name = d.get("name") or ""
    if not isinstance(name, str):
        raise ConfigError(f"{at}'name' must be a string, got {name!r}")
    return ModelEntry(spec=spec.strip(), name=name, options=opts, datasets=tuple(datasets),
                      image_labels=labels)


def read_models_file(path: str | Path) -> list[ModelEntry]:
    """A YAML list of models: ``- {model: SPEC, weights: PATH, num_classes: N, labels: FILE,
    datasets: [folder:DIR], ...}`` (a bare string is a spec without options)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"models file {p} does not exist")
    try:
        items = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"models file {p} is not valid YAML: {e}") from None
    if isinstance(items, dict) and set(items) == {"models"}:
        items = items["models"]
    if not isinstance(items, list) or not items:
        raise ConfigError(f"models file {p} must hold a non-empty list of models")
    return [entry_from_dict({"model": it} if isinstance(it, str) else it, base=p.parent,
                            where=f"{p} item {i + 1}") for i, it in enumerate(items)]


def zoo_weights_at_hand(name: str) -> bool:
    """Whether zoo model ``name`` can be loaded without weights=: its file is packaged, in the
    cache or mirror, or downloadable (with downloads allowed). Checks files, builds nothing."""
    card = get_card(name)
    remote = getattr(card, "weights", None)
    if remote is not None:
        mirror = mirror_dir()
        local = (cache_dir() / remote.relpath).is_file() or (
            mirror is not None and (mirror / remote.relpath).is_file())
        return local or (remote.url is not None and not offline())
    from ..models import zoo

    try:
        zoo._weights_path(card, None)
    except IdlsecError:
        return False
    return True


class LabModels:
    """The lab's model registry: entries by name, loaded models (cached), cards and datasets."""

    def __init__(self, entries: list[ModelEntry] | None = None, device: str = "cpu", *, preload=None):
        self.device = device
        self._lock = threading.RLock()
        self._loaded: dict[str, torch.nn.Module] = {}
        # zoo models the lab would offer if their weights were at hand: named in the schema (which
        # must not depend on the files of one machine), answered 404 (not 'unknown') when asked for
        self.missing: list[str] = []
        if entries is None:  # the zoo, where weights can be had
            names = model_names()
            entries = [ModelEntry(n) for n in names if zoo_weights_at_hand(n)]
            self.missing = [n for n in names if n not in {e.name for e in entries}]
            preload = False if preload is None else preload
        self.entries: dict[str, ModelEntry] = {}
        for e in entries:
            if e.name in self.entries:
                raise ConfigError(f"two models are called {e.name!r}: give one a different name "
                                  "(name: in the models file)")
            self.entries[e.name] = e
        if not self.entries:
            raise ConfigError("no model to offer: no zoo model has its weights at hand; pass "
                              "--model SPEC --weights PATH (or --weights random)")
        self.folders: dict[str, Folder] = {}
        self._sources: dict[str, list[str]] = {}
        if preload is None or preload:
            for name in self.entries:  # fail at start-up, not in a job
                self.load(name)
        for name in self.entries:
            self._sources[name] = self._resolve_sources(self.entries[name])

    # --- models --------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self.entries)

    def entry(self, name: str) -> ModelEntry:
        if name in self.missing:
            raise ResourceError(f"the weights of zoo model {name} are not at hand on this machine "
                                "(not packaged, cached or in the mirror)")
        if name not in self.entries:
            raise unknown_name("model", name, self.entries)
        return self.entries[name]

    def load(self, name: str) -> torch.nn.Module:
        e = self.entry(name)
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = load_model(e.spec, device=self.device, **e.options)
            return self._loaded[name]

    def card(self, name: str):
        """The model's card: the zoo's for a plain zoo entry (nothing loaded), else the loaded
        model's (derived from the spec and options)."""
        e = self.entry(name)
        if not e.options and name not in self._loaded:
            try:
                return get_card(e.spec)
            except IdlsecError:
                pass
        card = getattr(self.load(name), "card", None)
        if card is None:
            raise ConfigError(f"model {name} has no card")
        return card

    def schema_models(self) -> list[dict]:
        """Every model name the lab answers to, in the zoo's order (the missing ones included), with
        what the schema states about it: its dataset, image sources, class count, and whether batch
        runs take it. Reads cards only (zoo cards for missing models)."""
        out = []
        for name in [*self.entries, *self.missing]:
            if name in self.missing:
                card = get_card(name)
                sources = [card.dataset] if card.dataset in DATASETS else []
                batch = card.dataset in DATASETS
            else:
                card, e = self.card(name), self.entries[name]
                sources = self.datasets(name)
                batch = getattr(card, "dataset", None) in DATASETS and not e.options and e.spec == name
            out.append({"name": name, "dataset": getattr(card, "dataset", None), "sources": sources,
                        "num_classes": int(card.num_classes), "batch": batch})
        if self.missing:  # the zoo's order, whichever weights are at hand
            order = {n: i for i, n in enumerate(model_names())}
            out.sort(key=lambda m: order[m["name"]])
        return out

    # --- image sources -------------------------------------------------------------------------
    def _resolve_sources(self, e: ModelEntry) -> list[str]:
        card = self.card(e.name)
        out = [card.dataset] if getattr(card, "dataset", None) in DATASETS else []
        c, h, w = card.input_size
        for spec in e.datasets:
            if not spec.startswith("folder:"):
                if spec not in out:
                    out.append(spec)
                continue
            path = spec.split(":", 1)[1]
            if not Path(path).is_dir():
                raise ResourceError(f"image folder {path} (model {e.name}) does not exist")
            folder = Folder(path, (h, w), c, e.image_labels, _classes(card))
            stem = "folder:" + (Path(path).name or "images")
            fid, i = stem, 1
            while fid in self.folders and self.folders[fid] != folder:
                i += 1
                fid = f"{stem}-{i}"
            self.folders[fid] = folder
            out.append(fid)
        return out

    def datasets(self, name: str) -> list[str]:
        """What model ``name`` can draw images from (besides uploads): the built-in dataset it was
        trained on and its image folders (named ``folder:<folder name>``)."""
        self.entry(name)
        return list(self._sources[name])

    def all_datasets(self) -> list[str]:
        return list(dict.fromkeys(d for n in self.entries for d in self._sources[n]))

    def load_dataset(self, name: str):
        """Load a dataset the lab offers (a built-in name or a folder id from ``datasets``)."""
        if name in DATASETS:
            return load_dataset(name, "test")
        if name not in self.folders:
            raise unknown_name("dataset", name, self.all_datasets())
        f = self.folders[name]
        spec = "folder:" + f.path
        kw = {"size": f.size, "channels": f.channels}
        if f.image_labels is not None:
            kw["image_labels"] = f.image_labels
        if f.class_names is not None:
            kw["class_names"] = list(f.class_names)
        return load_dataset(spec, "test", **kw)

    # --- the registry's view ---------------------------------------------------------------------
    def info(self, name: str) -> dict:
        e, card = self.entry(name), self.card(name)
        weights = e.options.get("weights")
        classes = _classes(card)
        return {"name": name, "spec": e.spec, "dataset": getattr(card, "dataset", None),
                "datasets": self.datasets(name), "num_classes": card.num_classes,
                "input_size": list(card.input_size), "cam_layer": getattr(card, "cam_layer", None),
                "accuracy": getattr(card, "accuracy", None), "notes": getattr(card, "notes", "") or "",
                "weights": None if weights is None else (weights if weights == "random" else Path(weights).name),
                "classes": list(classes) if classes else None}


def _classes(card) -> tuple[str, ...] | None:
    classes = getattr(card, "classes", None)
    return tuple(classes) if classes else None
