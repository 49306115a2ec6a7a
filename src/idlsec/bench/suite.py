"""Benchmark suites: a YAML grid of models × datasets × interpreters × attacks (× defenses, eps,
seeds) with shared settings. Parsing checks the file's structure only; names of models,
interpreters, attacks and defenses are checked at run time (:func:`check_config`), so a suite may
name members that are not registered yet.

    name: smoke
    settings: {n: 4, seed: 0, eps: 8/255, batch_size: 2, params: {steps: 2}}
    models: [cifar10-resnet20]
    interpreters: [cam]
    attacks: [pgd, {name: pgd, label: pgd-20, params: {steps: 20}},
              {name: quscore, surrogate: cifar10-resnet20, max_queries: 1000, defense: jpeg}]
    defenses: [none]                                    # optional
    seeds: [0, 1, 2]                                    # optional: every configuration per seed
    overrides: [{where: {interpreter: mask}, set: {n: 20}}]
    exclude: [{interpreter: mask, attack: pgd}]
    universal: [{model: cifar10-resnet20, interpreter: cam, source: 0, target: 1}]  # SingleADV jobs
    detection: [{model: cifar10-resnet20, n: 64}]                                # detection jobs
    robustness: [{model: cifar10-resnet20, accuracy_models: [cifar10-resnet20]}]  # defended models

A black-box attack entry (``quscore``, ``square``) may name its ``surrogate`` model(s), the
oracle's per-image query budget ``max_queries`` (also passed to the attack) and a ``defense``
inside the oracle (a name, or ``{name, params}``) and a stateful ``monitor`` in the oracle (a
name, or ``{name: blacklight, threshold: 10, ...}``: BlackLight's or PIHA's parameters, recorded only, so the
attack runs unchanged; ``detector: PATH`` puts a saved detector in front, a
:class:`~idlsec.defenses.DetectorGate`, with optional ``detector_sha256`` and ``sticky``; ``{model}``
in PATH becomes each model's name, a path is relative to the working directory); its records carry each image's exact query count and, with a monitor, the
1-based index of its first flagged query (``detected_at``, -1: never flagged). ``universal``, ``detection`` and ``robustness`` entries are the keyword arguments of
:class:`~idlsec.bench.universal.UniversalJob` / :class:`~idlsec.bench.detection.DetectionJob` /
:class:`~idlsec.bench.robustness.RobustnessJob` (plus an optional ``label``), run once per seed. A
suite may hold only such jobs.

The schema is strict: an unknown key anywhere is an error that names it and the valid keys
(attack parameters are checked against the attack class's parameter names at run time).

``settings.compile: true`` runs every white-box attack compiled (``compile=True``,
:mod:`idlsec.compiling`; black-box attacks ignore it); it changes speed only, so it is not part of
a configuration's key: a run resumes across it. ``settings.cuda_graph: true`` likewise replays each
step of PGD, ADV^2 and AdvEdge(+) from a CUDA graph (``cuda_graph=True``, :mod:`idlsec.cuda_graphs`;
the ordinary step on the CPU). Mixed precision changes the numbers, so it is an attack parameter
(``amp: bf16``), part of the key.

``settings.params`` are shared attack hyperparameters (budgets: steps, max_queries, ...), passed
to every attack that accepts them; an entry's own ``params`` are passed as they are (an unknown
one is an error). ``eps`` and ``seed`` may be lists: they become axes of the grid.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import ConfigError, IdlsecError
from ..metrics import DEFAULT_K_GRID

SETTINGS = {
    "n": 8,
    "seed": 0,
    "eps": 8 / 255,
    "split": "test",
    "targeted": True,
    "batch_size": 32,
    "weights": None,
    "k_grid": list(DEFAULT_K_GRID),
    "params": {},
    "gallery": 8,
    "query_budgets": [100, 1_000, 10_000],
    # any model spec / image folder: load_model options (num_classes, input_size, mean, std,
    # labels), load_dataset options (size, image_labels) and whether misclassified images are kept
    "model_options": {},
    "data_options": {},
    "all_images": False,
    # white-box attacks run compiled (idlsec.compiling): speed only, so not in the records' key
    "compile": False,
    # PGD / ADV^2 / AdvEdge(+) steps replayed from CUDA graphs (idlsec.cuda_graphs): speed only, not in the key
    "cuda_graph": False,
}
MODEL_OPTIONS = ("num_classes", "input_size", "mean", "std", "labels")
DATA_OPTIONS = ("size", "image_labels")
TOP_LEVEL = {
    "name",
    "description",
    "settings",
    "models",
    "datasets",
    "interpreters",
    "attacks",
    "defenses",
    "overrides",
    "exclude",
    "seeds",
    "universal",
    "detection",
    "robustness",
}
ENTRY_KEYS = ("name", "label", "params")
BLACK_BOX_KEYS = ("surrogate", "max_queries", "defense", "monitor")  # attack entries only
JOB_KINDS = ("universal", "detection", "robustness")
AXES = ("model", "dataset", "interpreter", "attack", "defense", "eps", "seed")
# what an override may change for the configurations it matches
OVERRIDABLE = {"n", "batch_size", "params", "split", "targeted", "weights", "gallery"}


def eps_text(eps) -> str:
    """8/255 when eps is a whole number of 1/255 steps, else the number."""
    if eps is None:
        return "–"
    v = eps * 255
    return f"{v:.0f}/255" if abs(v - round(v)) < 1e-6 else f"{eps:.4g}"


@dataclass(frozen=True)
class Entry:
    """One member of a grid axis: a registered name, a display label and keyword parameters."""

    name: str
    label: str
    params: dict = field(default_factory=dict)
    surrogates: tuple = ()  # black-box attack entries: surrogate model names
    max_queries: int | None = None  # the oracle's per-image budget
    defense: str | None = None  # an input transform inside the oracle
    defense_params: dict = field(default_factory=dict)
    monitor: dict = field(default_factory=dict)  # a stateful monitor in the oracle {name, **params}


@dataclass
class BenchConfig:
    """One cell of the grid: everything that determines its records. ``key`` hashes all of it."""

    model: str
    dataset: str
    interpreter: str
    attack: str
    defense: str = "none"
    eps: float = 8 / 255
    seed: int = 0
    n: int = 8
    split: str = "test"
    targeted: bool = True
    batch_size: int = 32
    weights: str | None = None
    k_grid: list = field(default_factory=lambda: list(DEFAULT_K_GRID))
    attack_params: dict = field(default_factory=dict)  # the entry's own (strict)
    shared_params: dict = field(default_factory=dict)  # settings.params (where accepted)
    interpreter_params: dict = field(default_factory=dict)
    defense_params: dict = field(default_factory=dict)
    attack_label: str = ""
    interpreter_label: str = ""
    defense_label: str = ""
    gallery: int = 8  # images kept for the report; not in the key
    query_budgets: list = field(
        default_factory=lambda: [100, 1_000, 10_000]
    )  # report only; not in the key
    # black-box attacks: surrogate models, the oracle's per-image budget, a defense in the oracle
    surrogates: list = field(default_factory=list)
    max_queries: int | None = None
    oracle_defense: str | None = None
    oracle_defense_params: dict = field(default_factory=dict)
    monitor: dict = field(default_factory=dict)  # {name, **params}; records get detected_at
    model_options: dict = field(default_factory=dict)
    data_options: dict = field(default_factory=dict)
    all_images: bool = False
    compile: bool = False  # white-box attacks compiled; not in the key (compiled == eager to 1e-5)
    cuda_graph: bool = False  # steps replayed from CUDA graphs; not in the key (graph == eager to 1e-5)

    def identity(self) -> dict:
        d = asdict(self)
        for k in ("attack_label", "interpreter_label", "defense_label", "gallery", "query_budgets",
                  "compile", "cuda_graph"):
            d.pop(k)
        for k in _BLACK_BOX_FIELDS:  # absent when unused: white-box keys stay what they were
            if d[k] in (None, [], {}):
                d.pop(k)
        for k in ("model_options", "data_options", "all_images"):  # absent when unused
            if not d[k]:
                d.pop(k)
        return d

    @property
    def key(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def title(self) -> str:
        parts = [
            self.model,
            self.interpreter_label or self.interpreter,
            self.attack_label or self.attack,
        ]
        if self.defense != "none":
            parts.append(self.defense_label or self.defense)
        return " / ".join(parts) + f" (eps={eps_text(self.eps)}, seed={self.seed})"

    def to_dict(self) -> dict:
        return {"key": self.key, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> BenchConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


_BLACK_BOX_FIELDS = (
    "surrogates", "max_queries", "oracle_defense", "oracle_defense_params", "monitor"
)


@dataclass
class JobConfig:
    """A universal (SingleADV), detection or robustness job of a suite: its keyword arguments and a seed."""

    kind: str
    label: str
    params: dict
    seed: int = 0

    @property
    def key(self) -> str:
        blob = json.dumps(
            {"kind": self.kind, "params": self.params, "seed": self.seed},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def title(self) -> str:
        return f"{self.kind} {self.label} (seed={self.seed})"

    def to_dict(self) -> dict:
        return {"key": self.key, **asdict(self)}


@dataclass
class Suite:
    name: str
    configs: list[BenchConfig]
    settings: dict
    description: str = ""
    path: str | None = None
    jobs: list[JobConfig] = field(default_factory=list)


def _where(path: str, msg: str) -> ConfigError:
    return ConfigError(f"{path}: {msg}")


def parse_number(value, what: str, path: str) -> float:
    """A float, or a fraction written as a string ("8/255")."""
    if isinstance(value, bool):
        raise _where(path, f"{what} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            if "/" in value:
                a, b = value.split("/", 1)
                return float(a) / float(b)
            return float(value)
        except (ValueError, ZeroDivisionError):
            pass
    raise _where(path, f"{what} must be a number or a fraction like 8/255, got {value!r}")


_FRACTION = re.compile(r"^\s*\d+(\.\d*)?\s*/\s*\d+(\.\d*)?\s*$")


def _numbers(params: dict) -> dict:
    """Parameter values written as fractions ("2/255") become floats."""
    return {
        k: parse_number(v, k, "") if isinstance(v, str) and _FRACTION.match(v) else v
        for k, v in params.items()
    }


def _unknown(where: str, extra, valid) -> ConfigError:
    return ConfigError(f"{where} has unknown key(s) {sorted(extra)}; valid: {', '.join(valid)}")


def _black_box(item: dict, where: str) -> dict:
    """The black-box keys of an attack entry, checked."""
    out = {}
    sur = item.get("surrogate")
    if sur is not None:
        sur = [sur] if isinstance(sur, str) else sur
        if (
            not isinstance(sur, list)
            or not sur
            or not all(isinstance(v, str) and v.strip() for v in sur)
        ):
            raise ConfigError(
                f"{where}.surrogate must be a model name or a list of them, got {sur!r}"
            )
        out["surrogates"] = tuple(v.strip() for v in sur)
    mq = item.get("max_queries")
    if mq is not None:
        out["max_queries"] = _check_int(mq, f"{where}.max_queries", "")
    d = item.get("defense")
    if d is not None:
        params = {}
        if isinstance(d, dict):
            extra = set(d) - {"name", "params"}
            if extra:
                raise _unknown(f"{where}.defense", extra, ("name", "params"))
            params = d.get("params") or {}
            if not isinstance(params, dict):
                raise ConfigError(f"{where}.defense.params must be a mapping, got {params!r}")
            d = d.get("name")
        if not isinstance(d, str) or not d.strip():
            raise ConfigError(
                f"{where}.defense must be a defense name or {{name, params}}, got {d!r}"
            )
        out["defense"], out["defense_params"] = d.strip(), _numbers(params)
    mon = item.get("monitor")
    if mon is not None:
        from ..spec import make_monitor

        mon = {"name": mon} if isinstance(mon, str) else mon
        if not isinstance(mon, dict) or not isinstance(mon.get("name"), str):
            raise ConfigError(
                f"{where}.monitor must be a monitor name or {{name, ...params}}, got {mon!r}"
            )
        mon = {"name": mon["name"].strip(),
               **_numbers({k: v for k, v in mon.items() if k != "name"})}
        try:  # with a detector, its file's header (per model, if the path names {model})
            per_model = "{model}" in str(mon.get("detector", ""))
            make_monitor({k: v for k, v in mon.items() if k != "detector"} if per_model else mon)
        except IdlsecError as e:
            raise ConfigError(f"{where}.monitor: {e}") from None
        out["monitor"] = mon
    return out


def _for_model(monitor: dict, model: str) -> dict:
    """An attack entry's monitor for one model: ``{model}`` in its detector path becomes the
    model's name (a detector is fitted on one model)."""
    mon = dict(monitor)
    if isinstance(mon.get("detector"), str):
        mon["detector"] = mon["detector"].replace("{model}", model)
    return mon


def _entries(raw, axis: str, path: str, *, required: bool) -> list[Entry]:
    if raw is None:
        if required:
            raise _where(path, f"'{axis}' is required (a list of names)")
        return []
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise _where(path, f"'{axis}' must be a non-empty list, got {raw!r}")
    out = []
    for i, item in enumerate(raw):
        where = f"{path}: {axis}[{i}]"
        if isinstance(item, str) and item.strip():
            out.append(Entry(item.strip(), item.strip(), {}))
            continue
        if not isinstance(item, dict):
            raise ConfigError(
                f"{where} must be a name or a mapping {{name, label, params}}, got {item!r}"
            )
        if len(item) == 1 and "name" not in item:  # {pgd: {steps: 2}} shorthand
            ((name, params),) = item.items()
            item = {"name": name, "params": params or {}}
        valid = ENTRY_KEYS + (BLACK_BOX_KEYS if axis == "attacks" else ())
        extra = set(item) - set(valid)
        if extra:
            raise _unknown(where, extra, valid)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where} needs a 'name' (string)")
        params = item.get("params") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.params must be a mapping, got {params!r}")
        label = item.get("label", name)
        if not isinstance(label, str) or not label.strip():
            raise ConfigError(f"{where}.label must be a non-empty string")
        out.append(Entry(name.strip(), label.strip(), _numbers(params), **_black_box(item, where)))
    labels = [e.label for e in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise _where(
            path, f"'{axis}' lists {dup} more than once; give each entry a distinct 'label'"
        )
    return out


def _check_int(value, what, path, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise (
            _where(path, f"{what} must be an integer >= {minimum}, got {value!r}")
            if path
            else ConfigError(f"{what} must be an integer >= {minimum}, got {value!r}")
        )
    return value


def _settings(raw, path: str) -> dict:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _where(path, f"'settings' must be a mapping, got {raw!r}")
    unknown = set(raw) - set(SETTINGS)
    if unknown:
        raise _where(path, f"unknown setting(s) {sorted(unknown)}; valid: {sorted(SETTINGS)}")
    s = {**SETTINGS, **raw}
    eps = s["eps"] if isinstance(s["eps"], list) else [s["eps"]]
    s["eps"] = [parse_number(e, "settings.eps", path) for e in eps]
    for e in s["eps"]:
        if not 0 < e <= 1:
            raise _where(path, f"settings.eps must be in (0, 1] ([0,1] pixel units), got {e}")
    seeds = s["seed"] if isinstance(s["seed"], list) else [s["seed"]]
    s["seed"] = [_check_int(x, "settings.seed", path, minimum=0) for x in seeds]
    if not s["eps"] or not s["seed"]:
        raise _where(path, "settings.eps and settings.seed must not be empty lists")
    _check_shared(s, "settings", path)
    for key, valid in (("model_options", MODEL_OPTIONS), ("data_options", DATA_OPTIONS)):
        if not isinstance(s[key], dict):
            raise _where(path, f"settings.{key} must be a mapping, got {s[key]!r}")
        extra = set(s[key]) - set(valid)
        if extra:
            raise _where(path, f"settings.{key} has unknown key(s) {sorted(extra)}; valid: "
                         f"{', '.join(valid)}")
    for key in ("all_images", "compile", "cuda_graph"):
        if not isinstance(s[key], bool):
            raise _where(path, f"settings.{key} must be true or false, got {s[key]!r}")
    s["params"] = _numbers(s["params"])
    k = s["k_grid"]
    if (
        not isinstance(k, list)
        or not k
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1 for v in k
        )
    ):
        raise _where(path, f"settings.k_grid must be a list of fractions in (0, 1], got {k!r}")
    s["k_grid"] = [float(v) for v in k]
    b = s["query_budgets"]
    if not isinstance(b, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in b
    ):
        raise _where(path, f"settings.query_budgets must be a list of positive integers, got {b!r}")
    return s


def _check_shared(s: dict, where: str, path: str):
    """Checks of the settings an override may also set."""
    if "n" in s:
        _check_int(s["n"], f"{where}.n", path)
    if "batch_size" in s:
        _check_int(s["batch_size"], f"{where}.batch_size", path)
    if "gallery" in s:
        _check_int(s["gallery"], f"{where}.gallery", path, minimum=0)
    if "targeted" in s and not isinstance(s["targeted"], bool):
        raise _where(path, f"{where}.targeted must be true or false, got {s['targeted']!r}")
    if "split" in s and s["split"] not in ("test", "val", "train"):
        raise _where(path, f"{where}.split must be 'test', 'val' or 'train', got {s['split']!r}")
    if "params" in s and not isinstance(s["params"], dict):
        raise _where(path, f"{where}.params must be a mapping, got {s['params']!r}")
    if "weights" in s and s["weights"] is not None and not isinstance(s["weights"], str):
        raise _where(
            path, f"{where}.weights must be a path, 'random' or null, got {s['weights']!r}"
        )


def _rules(raw, name: str, path: str) -> list:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _where(path, f"'{name}' must be a list, got {raw!r}")
    return raw


def _matches(cfg_axes: dict, where: dict, what: str, path: str) -> bool:
    unknown = set(where) - set(AXES)
    if unknown:
        raise _where(path, f"{what} uses unknown field(s) {sorted(unknown)}; valid: {list(AXES)}")
    for k, v in where.items():
        wanted = v if isinstance(v, list) else [v]
        if k == "eps":
            wanted = [parse_number(w, f"{what}.eps", path) for w in wanted]
            if not any(abs(cfg_axes[k] - w) < 1e-12 for w in wanted):
                return False
        elif cfg_axes[k] not in wanted:
            return False
    return True


def parse_suite(data, path: str = "<suite>") -> Suite:
    """Validate the structure of a parsed YAML suite and expand its grid (in a fixed order)."""
    if not isinstance(data, dict):
        raise _where(path, "a suite must be a mapping with models, interpreters and attacks")
    unknown = set(data) - TOP_LEVEL
    if unknown:
        raise _where(
            path, f"unknown top-level key(s) {sorted(unknown)}; valid: {sorted(TOP_LEVEL)}"
        )
    s = _settings(data.get("settings"), path)
    if data.get("seeds") is not None:
        seeds = data["seeds"]
        if "seed" in (data.get("settings") or {}):
            raise _where(path, "give the seeds either as 'seeds' or as 'settings.seed', not both")
        if not isinstance(seeds, list) or not seeds:
            raise _where(path, f"'seeds' must be a non-empty list of integers, got {seeds!r}")
        s["seed"] = [_check_int(x, "seeds", path, minimum=0) for x in seeds]
        if len(set(s["seed"])) != len(s["seed"]):
            raise _where(path, f"'seeds' lists a seed more than once: {seeds}")
    jobs = _jobs(data, s["seed"], path)
    grid = any(data.get(k) is not None for k in ("models", "interpreters", "attacks")) or not jobs
    name = data.get("name") or Path(path).stem
    if not isinstance(name, str):
        raise _where(path, f"'name' must be a string, got {name!r}")
    if not grid:
        for k in ("datasets", "defenses", "overrides", "exclude"):
            if data.get(k) is not None:
                raise _where(
                    path,
                    f"'{k}' applies to the attack grid, which this suite does not have "
                    "(no models/interpreters/attacks)",
                )
        return Suite(
            name=name,
            configs=[],
            settings=s,
            description=str(data.get("description", "")),
            path=path,
            jobs=jobs,
        )
    models = _entries(data.get("models"), "models", path, required=True)
    datasets = _entries(data.get("datasets"), "datasets", path, required=False)
    interps = _entries(data.get("interpreters"), "interpreters", path, required=True)
    attacks = _entries(data.get("attacks"), "attacks", path, required=True)
    defenses = _entries(data.get("defenses"), "defenses", path, required=False) or [
        Entry("none", "none")
    ]
    for m in models:
        if m.params:
            raise _where(path, f"models[{m.label}]: models take no params (use settings.weights)")
    overrides = _rules(data.get("overrides"), "overrides", path)
    excludes = _rules(data.get("exclude"), "exclude", path)
    for i, rule in enumerate(overrides):
        if (
            not isinstance(rule, dict)
            or set(rule) - {"where", "set"}
            or not isinstance(rule.get("set"), dict)
        ):
            raise _where(
                path, f"overrides[{i}] must be {{where: {{...}}, set: {{...}}}}, got {rule!r}"
            )
        bad = set(rule["set"]) - OVERRIDABLE
        if bad:
            raise _where(
                path,
                f"overrides[{i}].set cannot change {sorted(bad)}; allowed: {sorted(OVERRIDABLE)}",
            )
        _check_shared(rule["set"], f"overrides[{i}].set", path)
        if not isinstance(rule.get("where", {}), dict):
            raise _where(path, f"overrides[{i}].where must be a mapping")
    for i, rule in enumerate(excludes):
        if not isinstance(rule, dict) or not rule:
            raise _where(
                path, f"exclude[{i}] must be a non-empty mapping like {{interpreter: mask}}"
            )

    configs = []
    for m, d, itp, atk, dfn, eps, seed in itertools.product(
        models, datasets or [None], interps, attacks, defenses, s["eps"], s["seed"]
    ):
        card_dataset = _card_dataset(m.name, s["model_options"])
        dataset = d.name if d is not None else card_dataset
        if dataset is None:
            raise _where(path, f"model {m.name} has no dataset of its own: list one under "
                         "'datasets' (e.g. folder:DIR)")
        if d is not None and not dataset.startswith("folder:") and card_dataset != dataset:
            continue  # a model is only paired with the dataset it was trained on
        axes = {
            "model": m.name,
            "dataset": dataset,
            "interpreter": itp.label,
            "attack": atk.label,
            "defense": dfn.label,
            "eps": eps,
            "seed": seed,
        }
        if any(_matches(axes, rule, f"exclude[{i}]", path) for i, rule in enumerate(excludes)):
            continue
        local = {k: s[k] for k in ("n", "batch_size", "split", "targeted", "weights", "gallery")}
        shared = dict(s["params"])
        for i, rule in enumerate(overrides):
            if _matches(axes, rule.get("where", {}), f"overrides[{i}].where", path):
                for k, v in rule["set"].items():
                    if k == "params":
                        shared.update(_numbers(v))
                    else:
                        local[k] = v
        black_box = {
            "surrogates": list(atk.surrogates),
            "max_queries": atk.max_queries,
            "oracle_defense": atk.defense,
            "oracle_defense_params": dict(atk.defense_params),
            "monitor": _for_model(atk.monitor, m.name),
        }
        configs.append(
            BenchConfig(
                model=m.name,
                dataset=dataset,
                interpreter=itp.name,
                attack=atk.name,
                defense=dfn.name,
                eps=eps,
                seed=seed,
                k_grid=s["k_grid"],
                attack_params=dict(atk.params),
                shared_params={k: v for k, v in shared.items() if k not in atk.params},
                interpreter_params=dict(itp.params),
                defense_params=dict(dfn.params),
                attack_label=atk.label,
                interpreter_label=itp.label,
                defense_label=dfn.label,
                query_budgets=list(s["query_budgets"]),
                model_options=dict(s["model_options"]),
                data_options=dict(s["data_options"]),
                all_images=s["all_images"],
                compile=s["compile"],
                cuda_graph=s["cuda_graph"],
                **black_box,
                **local,
            )
        )
    if not configs:
        raise _where(
            path, "the grid is empty (every model/dataset pair is incompatible or excluded)"
        )
    keys = [c.key for c in configs]
    if len(set(keys)) != len(keys):
        raise _where(path, "two grid cells are identical (same names, params and settings)")
    return Suite(
        name=name,
        configs=configs,
        settings=s,
        description=str(data.get("description", "")),
        path=path,
        jobs=jobs,
    )


def _job_fields(kind: str) -> list[str]:
    from dataclasses import fields as dc_fields

    if kind == "universal":
        from .universal import UniversalJob as cls
    elif kind == "detection":
        from .detection import DetectionJob as cls
    else:
        from .robustness import RobustnessJob as cls
    return [f.name for f in dc_fields(cls) if f.name not in ("seed", "device")]


def _jobs(data: dict, seeds: list[int], path: str) -> list[JobConfig]:
    """The universal / detection / robustness jobs, every one once per seed (keys checked against the job's
    fields; values are checked when the job runs)."""
    out = []
    for kind in JOB_KINDS:
        raw = data.get(kind)
        if raw is None:
            continue
        if isinstance(raw, dict):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            raise _where(path, f"'{kind}' must be a non-empty list of mappings, got {raw!r}")
        valid = ["label", *_job_fields(kind)]
        labels = []
        for i, item in enumerate(raw):
            where = f"{path}: {kind}[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{where} must be a mapping of {kind} job settings, got {item!r}")
            extra = set(item) - set(valid)
            if extra:
                raise _unknown(where, extra, valid)
            if "model" not in item:
                raise ConfigError(f"{where} needs a 'model'")
            params = {k: v for k, v in item.items() if k != "label"}
            if "eps" in params and params["eps"] is not None:
                params["eps"] = parse_number(params["eps"], f"{kind}[{i}].eps", path)
            if isinstance(params.get("params"), dict):
                params["params"] = _numbers(params["params"])
            label = str(item.get("label") or f"{i}")
            labels.append(label)
            out += [JobConfig(kind, label, params, seed) for seed in seeds]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise _where(path, f"'{kind}' lists the label(s) {dup} more than once")
    return out


def _card_dataset(model: str, options: dict | None = None) -> str | None:
    from ..models import get_card, model_card

    return model_card(model, **options).dataset if options else get_card(model).dataset


def load_suite(path, sets=()) -> Suite:
    """Read and parse a suite file; ``sets`` (``KEY=VALUE`` texts) override it first (see
    :func:`apply_sets`)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"suite file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if sets:
        data = apply_sets(data, sets)
    return parse_suite(data, str(p))


def apply_sets(data, sets) -> dict:
    """Override a parsed suite with ``KEY=VALUE`` texts (``idlsec bench --set``): a top-level key
    (``seeds=[0,1,2]``) or a setting, dotted into mappings (``n=100``,
    ``params.max_queries=10000``), or the fields of the jobs whose label matches a glob
    (``universal.*.n_train=2000``, ``detection.unseen.n_benign=500``). VALUE is read as YAML. The
    result is checked as usual."""
    import copy

    import yaml

    if not isinstance(data, dict):
        return data
    data = copy.deepcopy(data)
    for text in sets:
        if "=" not in text:
            raise ConfigError(
                f"--set expects KEY=VALUE (e.g. n=100 or params.steps=10), got {text!r}"
            )
        key, value = (t.strip() for t in text.split("=", 1))
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {text}: the value is not valid YAML") from None
        parts = key.split(".")
        if parts[0] in JOB_KINDS and len(parts) > 2:  # universal.<label glob>.FIELD...
            for entry in _job_entries(data, parts[0], parts[1], text):
                _set_path(entry, parts[2:], value, text)
            continue
        if parts[0] in TOP_LEVEL:
            node = data
        else:
            if parts[0] not in SETTINGS:
                raise ConfigError(
                    f"--set {text}: unknown key {parts[0]!r}; valid: settings "
                    f"{sorted(SETTINGS)} or top-level {sorted(TOP_LEVEL)}"
                )
            if not isinstance(data.get("settings") or {}, dict):
                raise ConfigError("--set: the suite's 'settings' is not a mapping")
            node = data.setdefault("settings", {}) or {}
            data["settings"] = node
        _set_path(node, parts, value, text)
    return data


def _set_path(node: dict, parts: list, value, text: str) -> None:
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {text}: {part!r} is not a mapping")
        node = nxt
    node[parts[-1]] = value


def _job_entries(data: dict, kind: str, pattern: str, text: str) -> list:
    """The ``kind`` job entries whose label (default: the entry's index) matches the glob
    ``pattern`` (``*``: every entry); none is an error naming the labels."""
    import copy
    import fnmatch

    raw = data.get(kind)
    raw = [raw] if isinstance(raw, dict) else raw
    if not isinstance(raw, list):
        raise ConfigError(f"--set {text}: the suite has no '{kind}' jobs")
    labels = [str(e.get("label") or i) if isinstance(e, dict) else str(i) for i, e in enumerate(raw)]
    picked = [i for i, lab in enumerate(labels) if fnmatch.fnmatchcase(lab, pattern)]
    if not picked or not all(isinstance(raw[i], dict) for i in picked):
        raise ConfigError(f"--set {text}: no '{kind}' job label matches {pattern!r}; labels: {labels}")
    for i in picked:  # its own copy: YAML merge keys (<<: *base) share nested mappings
        raw[i] = copy.deepcopy(raw[i])
    data[kind] = raw
    return [raw[i] for i in picked]


def filter_suite(suite: Suite, only: list[str]) -> Suite:
    """Keep the configurations matching every ``FIELD=V1,V2`` (fields: model, dataset, interpreter,
    attack, defense; labels as in the suite)."""
    configs = suite.configs
    for item in only:
        if "=" not in item:
            raise ConfigError(f"--only expects FIELD=VALUE[,VALUE...], got {item!r}")
        k, v = (t.strip() for t in item.split("=", 1))
        get = {
            "model": lambda c: c.model,
            "dataset": lambda c: c.dataset,
            "interpreter": lambda c: c.interpreter_label or c.interpreter,
            "attack": lambda c: c.attack_label or c.attack,
            "defense": lambda c: c.defense_label or c.defense,
        }
        if k not in get:
            raise ConfigError(f"--only: unknown field {k!r}; valid: {sorted(get)}")
        wanted = {x.strip() for x in v.split(",")}
        configs = [c for c in configs if get[k](c) in wanted]
    if not configs:
        raise ConfigError(f"--only {' '.join(only)} matches no configuration of {suite.name}")
    return Suite(
        name=suite.name,
        configs=configs,
        settings=suite.settings,
        description=suite.description,
        path=suite.path,
    )  # --only selects attack configurations: jobs are left out


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' with 0 <= i < n (e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ConfigError(f"--shard expects i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def shard_configs(configs: list[BenchConfig], shard: tuple[int, int]) -> list[BenchConfig]:
    """The configurations of shard i of n, in grid order. They are dealt round robin in the order
    of their keys (hashes), not of the grid: a grid cycles through its attacks, so dealing in grid
    order would give one shard every cheap PGD and another every expensive ADV^2. Shard sizes
    differ by at most one."""
    i, n = shard
    rank = {j: r for r, j in enumerate(sorted(range(len(configs)), key=lambda j: configs[j].key))}
    return [c for j, c in enumerate(configs) if rank[j] % n == i]


def check_config(cfg: BenchConfig) -> None:
    """Run-time checks: registered names, model/dataset pairing, parameter names."""
    from ..attacks import ATTACKS
    from ..errors import unknown_name
    from ..interpreters import INTERPRETERS
    from ..models import get_card

    card = _card(cfg)
    if cfg.interpreter not in INTERPRETERS:
        raise unknown_name("interpreter", cfg.interpreter, INTERPRETERS)
    if cfg.attack not in ATTACKS:
        raise unknown_name("attack", cfg.attack, ATTACKS)
    valid = ATTACKS[cfg.attack].param_names()
    reserved = {"eps", "targeted", "seed", "progress", "callback"} & set(cfg.attack_params)
    if reserved:
        raise ConfigError(f"{cfg.title}: set {sorted(reserved)} in settings, not in attack params")
    unknown = set(cfg.attack_params) - set(valid)
    if unknown:
        raise ConfigError(
            f"{cfg.title}: attack {cfg.attack!r} has no parameter(s) {sorted(unknown)}; "
            f"valid: {valid}"
        )
    from ..defenses import DEFENSES

    if cfg.defense != "none" and cfg.defense not in DEFENSES:
        raise unknown_name("defense", cfg.defense, DEFENSES)
    black_box = ATTACKS[cfg.attack].black_box
    if not black_box:
        used = [k for k in ("surrogates", "max_queries", "oracle_defense", "monitor")
                if getattr(cfg, k)]
        if used:
            raise ConfigError(
                f"{cfg.title}: surrogate, max_queries, defense and monitor on an attack entry apply to "
                f"black-box attacks only, not {cfg.attack!r}"
            )
        return
    if "surrogates" in cfg.attack_params:
        raise ConfigError(
            f"{cfg.title}: give the surrogate models as the entry's 'surrogate', not in params"
        )
    if cfg.defense != "none":
        raise ConfigError(
            f"{cfg.title}: a black-box attack meets its defense inside the oracle: put "
            f"'defense: {cfg.defense}' on the attack entry, not in 'defenses'"
        )
    dataset = card.dataset
    for name in cfg.surrogates:
        if get_card(name).dataset != dataset:
            raise ConfigError(
                f"{cfg.title}: surrogate {name} is trained on {get_card(name).dataset}, "
                f"not {dataset}"
            )
    if cfg.monitor.get("detector") is not None:  # fitted on this model (the header's card name)
        from ..spec import make_monitor

        try:
            make_monitor(cfg.monitor, model_name=card.name)
        except IdlsecError as e:
            raise ConfigError(f"{cfg.title}: {e}") from None
    if cfg.oracle_defense is not None and cfg.oracle_defense not in DEFENSES:
        raise unknown_name("defense", cfg.oracle_defense, DEFENSES)


def _card(cfg: BenchConfig):
    from ..models import get_card, model_card

    return model_card(cfg.model, **cfg.model_options) if cfg.model_options else get_card(cfg.model)


def attack_params(cfg: BenchConfig) -> dict:
    """The attack's keyword arguments: the shared ones the attack accepts, then its own."""
    from ..attacks import ATTACKS

    valid = set(ATTACKS[cfg.attack].param_names())
    out = {k: v for k, v in cfg.shared_params.items() if k in valid}
    out.update(cfg.attack_params)
    if cfg.compile and "compile" in valid:  # settings.compile: white-box attacks only
        out.setdefault("compile", True)
    if cfg.cuda_graph and "cuda_graph" in valid:  # settings.cuda_graph: PGD, ADV^2, AdvEdge(+)
        out.setdefault("cuda_graph", True)
    if cfg.max_queries is not None and "max_queries" in valid:
        out["max_queries"] = cfg.max_queries  # the entry's budget is the attack's and the oracle's
    return out


def to_spec(cfg: BenchConfig, device: str = "cpu"):
    """The :class:`~idlsec.spec.AttackSpec` of a configuration: white-box attacks face the
    ``defenses`` axis (the defended model); black-box attacks get their entry's surrogates, query
    budget and the defense inside the oracle."""
    from ..spec import AttackSpec

    black_box = _is_black_box(cfg)
    return AttackSpec(
        model=cfg.model,
        attack=cfg.attack,
        interpreter=cfg.interpreter,
        params=attack_params(cfg),
        eps=cfg.eps,
        targeted=cfg.targeted,
        seed=cfg.seed,
        surrogates=tuple(cfg.surrogates),
        max_queries=cfg.max_queries,
        defense=cfg.oracle_defense if black_box else cfg.defense,
        defense_params=dict(cfg.oracle_defense_params if black_box else cfg.defense_params),
        monitor=dict(cfg.monitor) if black_box and cfg.monitor else None,
        interpreter_params=dict(cfg.interpreter_params),
        weights=cfg.weights,
        model_options=dict(cfg.model_options),
        device=device,
    )


def _is_black_box(cfg: BenchConfig) -> bool:
    from ..attacks import ATTACKS

    return cfg.attack in ATTACKS and ATTACKS[cfg.attack].black_box
