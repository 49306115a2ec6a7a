"""One attack, described as data and built in one place (RobustBench's single ``benchmark()``):

    spec = AttackSpec(model="cifar10-resnet20", attack="adv2", interpreter="cam",
                      params={"steps": 100})
    spec.check()                    # every name, parameter and combination, before any work
    attack = build_attack(spec)     # the model, interpreter, defense, oracle and surrogates
    res = attack.run(x, targets)

:func:`build_attack` is the only construction path of an attack from names: ``idlsec attack``,
suites (``idlsec bench``), the detection benchmark, the lab and the Python API all call it, so
the same spec gives the same attack, and the same records, everywhere.

- White-box attacks get the model; with ``defense`` set, the *defended* model
  (``defenses.defend(model, transform)``), so the interpreter explains what the system shows.
- Black-box attacks (``black_box = True``, e.g. QuScore) get a :class:`~idlsec.attacks.BlackBox`
  oracle around the model with the interpreter exposed, ``defense`` inside it and a per-image
  budget of ``max_queries`` (else the attack's own ``max_queries`` parameter), plus the
  ``surrogates`` (model specs, loaded on ``device``). The undefended interpreter is attached as
  the attack's ``evaluator``: the result's maps are the evaluator's view, as an IDLS audit reports.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

from .errors import ConfigError, unknown_name

RESERVED_PARAMS = ("eps", "targeted", "seed", "progress", "callback", "surrogates")
MODEL_OPTIONS = ("num_classes", "input_size", "mean", "std", "labels")


@dataclass
class AttackSpec:
    """Everything that determines an attack (not the images): see the module docstring.

    ``params``: the attack's own hyperparameters (``steps``, ``alpha``, ...; not eps, targeted,
    seed: those are fields). ``model_options``: ``load_model`` keywords for a user model
    (num_classes, input_size, mean, std, labels); ``surrogates``, ``max_queries``: black-box
    only."""

    model: str
    attack: str
    interpreter: str | None = None
    params: dict = field(default_factory=dict)
    eps: float = 8 / 255
    targeted: bool = True
    seed: int = 0
    surrogates: tuple = ()
    max_queries: int | None = None
    defense: str | None = None
    defense_params: dict = field(default_factory=dict)
    monitor: dict | None = None  # black-box: a stateful monitor in the oracle, {name, **params}
    interpreter_params: dict = field(default_factory=dict)
    weights: str | None = None
    model_options: dict = field(default_factory=dict)
    device: str = "cpu"

    def __post_init__(self):
        if isinstance(self.surrogates, str):
            self.surrogates = tuple(s.strip() for s in self.surrogates.split(",") if s.strip())
        elif isinstance(self.surrogates, list):
            self.surrogates = tuple(self.surrogates)
        if self.defense == "none":
            self.defense = None

    # --- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["surrogates"] = list(self.surrogates)
        return d

    @classmethod
    def from_dict(cls, d: dict, *, strict: bool = True) -> AttackSpec:
        """Build from a mapping; with ``strict`` an unknown key is an error naming it and the
        valid ones."""
        if not isinstance(d, dict):
            raise ConfigError(f"an attack spec must be a mapping, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown and strict:
            raise ConfigError(
                f"attack spec has unknown key(s) {unknown}; valid: {', '.join(names)}"
            )
        missing = [k for k in ("model", "attack") if k not in d]
        if missing:
            raise ConfigError(f"attack spec needs {' and '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    # --- validation --------------------------------------------------------------------------
    @property
    def attack_class(self):
        from .attacks import ATTACKS

        if self.attack not in ATTACKS:
            raise unknown_name("attack", self.attack, ATTACKS)
        return ATTACKS[self.attack]

    @property
    def black_box(self) -> bool:
        return bool(self.attack_class.black_box)

    def check(self) -> None:
        """Every check that needs no model weights or images: names, parameter names and values
        that the spec itself fixes, and the combinations (ConfigError naming the culprit)."""
        from .interpreters import INTERPRETERS
        from .validation import check_positive

        cls = self.attack_class
        for name in ("params", "defense_params", "interpreter_params", "model_options"):
            if not isinstance(getattr(self, name), dict):
                raise ConfigError(f"{name} must be a mapping, got {getattr(self, name)!r}")
        bad = sorted(set(self.model_options) - set(MODEL_OPTIONS))
        if bad:
            raise ConfigError(f"unknown model option(s) {bad}; valid: {', '.join(MODEL_OPTIONS)}")
        card = model_card(self.model, **self.model_options)
        reserved = sorted(set(self.params) & set(RESERVED_PARAMS))
        if reserved:
            raise ConfigError(
                f"set {', '.join(reserved)} with the spec's own fields, not in params"
            )
        valid = [p for p in cls.param_names() if p not in RESERVED_PARAMS]
        unknown = sorted(set(self.params) - set(valid))
        if unknown:
            raise ConfigError(
                f"attack {self.attack!r} has no parameter(s) {unknown}; valid: {valid}"
            )
        check_positive("eps", self.eps, upper=1.0)
        if not isinstance(self.targeted, bool):
            raise ConfigError(f"targeted must be True or False, got {self.targeted!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        interp_cls = None
        if self.interpreter is not None:
            if self.interpreter not in INTERPRETERS:
                raise unknown_name("interpreter", self.interpreter, INTERPRETERS)
            interp_cls = INTERPRETERS[self.interpreter]
            _check_keywords(
                f"interpreter {self.interpreter!r}", interp_cls, self.interpreter_params
            )
        elif self.interpreter_params:
            raise ConfigError("interpreter_params given without an interpreter")
        cls.check_interpreter_class(interp_cls)
        if self.defense is not None:
            from .defenses import DEFENSES

            if self.defense not in DEFENSES:
                raise unknown_name("defense", self.defense, DEFENSES)
            _check_keywords(
                f"defense {self.defense!r}", DEFENSES[self.defense], self.defense_params
            )
        elif self.defense_params:
            raise ConfigError("defense_params given without a defense")
        if self.monitor is not None:
            if not cls.black_box:
                raise ConfigError(f"a monitor applies to black-box attacks only, not {self.attack}")
            make_monitor(self.monitor, model_name=card.name)
        if cls.black_box:
            if not self.surrogates and getattr(cls, "uses_surrogates", True):  # Square uses none
                raise ConfigError(
                    f"{self.attack} is a black-box attack: give surrogate model(s) "
                    "(--surrogate MODEL[,MODEL2])"
                )
            for s in self.surrogates:
                other = model_card(s)
                if card.dataset and other.dataset and other.dataset != card.dataset:
                    raise ConfigError(
                        f"surrogate {s} is trained on {other.dataset}, not {card.dataset}"
                    )
            if self.max_queries is not None:
                if (
                    isinstance(self.max_queries, bool)
                    or not isinstance(self.max_queries, int)
                    or self.max_queries < 1
                ):
                    raise ConfigError(
                        f"max_queries must be a positive integer, got {self.max_queries!r}"
                    )
                if "max_queries" in self.params and self.params["max_queries"] != self.max_queries:
                    raise ConfigError(
                        "max_queries given twice (spec field and params) with different values"
                    )
        elif self.surrogates or self.max_queries is not None:
            raise ConfigError(
                f"surrogates and max_queries apply to black-box attacks only, not {self.attack}"
            )


MONITORS = ("blacklight", "piha")


GATE_KEYS = ("detector", "detector_sha256", "sticky")  # a monitor's DetectorGate fields


def make_monitor(monitor, model=None, *, model_name: str | None = None):
    """The stateful monitor a ``{name, **params}`` mapping describes (names and values checked;
    building one is cheap: an empty history). With ``detector: PATH`` (a detector saved by
    ``Detector.save``; optional ``detector_sha256``, ``sticky``) the monitor is a
    :class:`~idlsec.defenses.DetectorGate` with that detector in front; the file's header is
    checked here (and, with ``model_name``, that it was fitted on that model), and the detector
    is loaded against ``model`` when one is given (the oracle's model, the one it was fitted on)."""
    if not isinstance(monitor, dict) or not isinstance(monitor.get("name"), str):
        raise ConfigError(f"monitor must be a mapping {{name, ...params}}, got {monitor!r}")
    if monitor["name"] not in MONITORS:
        raise unknown_name("monitor", monitor["name"], MONITORS)
    from .defenses import PIHA, BlackLight, DetectorGate

    cls = {"blacklight": BlackLight, "piha": PIHA}[monitor["name"]]
    params = {k: v for k, v in monitor.items() if k != "name" and k not in GATE_KEYS}
    _check_keywords(f"monitor '{monitor['name']}'", cls, params)
    history = cls(**params)
    gate = {k: monitor[k] for k in GATE_KEYS if k in monitor}
    if not gate:
        return history
    if not isinstance(gate.get("detector"), str):
        raise ConfigError(f"monitor.detector must be the path of a saved detector (.safetensors), "
                          f"got {gate.get('detector')!r}")
    from .defenses.persist import load_detector, read_header

    header = read_header(gate["detector"], sha256=gate.get("detector_sha256"))
    if model_name is not None and header["model"] not in (None, model_name):
        raise ConfigError(f"monitor.detector {gate['detector']} was fitted on {header['model']}, "
                          f"not {model_name}")
    sticky = gate.get("sticky", True)
    if not isinstance(sticky, bool):
        raise ConfigError(f"monitor.sticky must be true or false, got {sticky!r}")
    if model is None:
        return history
    detector = load_detector(gate["detector"], model, sha256=gate.get("detector_sha256"))
    return DetectorGate(history, detector, sticky=sticky)


def _check_keywords(what: str, cls, given: dict) -> None:
    """Keyword names ``cls(...)`` accepts: those of its ``__init__`` and, while an ``__init__``
    passes ``**kwargs`` on, of its bases' (anything when the chain never ends in a fixed one)."""
    valid: list = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            return
        params = inspect.signature(init).parameters.values()
        valid += [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.name not in ("self", "model") and p.name not in valid]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    else:
        return
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"{what} has no parameter(s) {unknown}; valid: {valid}")


# --- models: the one place that maps a spec's model fields to load_model ---------------------
def model_card(spec: str, **options):
    """The model's card (a zoo card, or the one derived for any other model spec); raises
    ConfigError for an unknown or invalid spec."""
    from .models import model_card as card_of

    return card_of(spec, **options)


def load_victim(spec: AttackSpec):
    """The spec's model on its device, with its weights and options (only the options set)."""
    from .models import load_model

    options = {k: v for k, v in spec.model_options.items() if v is not None}
    return load_model(spec.model, weights=spec.weights, device=spec.device, **options)


@dataclass
class Built:
    """What :func:`build` made: the attack, the model it was built on (the defended one when a
    white-box attack faces a defense), the interpreter and the defense transform (or None)."""

    attack: object
    model: object
    interpreter: object
    defense: object = None


def build(
    spec: AttackSpec,
    *,
    model=None,
    interpreter=None,
    progress: bool = False,
    callback: Callable | None = None,
    loader: Callable | None = None,
) -> Built:
    """Check ``spec`` and build its attack; see :func:`build_attack`. ``model``: the victim, already
    loaded (else ``load_victim(spec)``); ``interpreter``: its interpreter, already built (else from
    ``spec.interpreter``); ``loader(name)``: how to load a surrogate (default ``load_model`` on
    ``spec.device``; the lab passes its cache)."""
    from .interpreters import get_interpreter

    spec.check()
    cls = spec.attack_class
    model = load_victim(spec) if model is None else model
    transform = None
    if spec.defense is not None:
        from .defenses import get_defense

        transform = get_defense(spec.defense, **spec.defense_params)
        if hasattr(transform, "to"):
            transform = transform.to(spec.device)
    common = {
        "eps": spec.eps,
        "targeted": spec.targeted,
        "seed": spec.seed,
        "progress": progress,
        "callback": callback,
    }
    params = dict(spec.params)
    if cls.black_box:
        from .attacks import BlackBox

        if interpreter is None and spec.interpreter is not None:
            interpreter = get_interpreter(spec.interpreter, model, **spec.interpreter_params)
        if spec.max_queries is not None:
            params["max_queries"] = spec.max_queries
        budget = params.get("max_queries", cls.param_defaults().get("max_queries"))
        monitor = None
        if spec.monitor is not None:
            monitor = make_monitor(spec.monitor, model)
        oracle = BlackBox(
            model, output="probs", interpreter=interpreter, defense=transform, max_queries=budget,
            monitor=monitor,
        )
        if loader is None:
            from .models import load_model

            def loader(name):
                return load_model(name, device=spec.device)

        attack = cls(
            oracle, None, surrogates=[loader(s) for s in spec.surrogates], **common, **params
        )
        attack.evaluator = interpreter  # the result's maps: the target's, on the undefended model
        return Built(attack, model, interpreter, transform)
    if transform is not None:
        from .defenses import defend

        model = defend(model, transform)
    if interpreter is None and spec.interpreter is not None:
        interpreter = get_interpreter(spec.interpreter, model, **spec.interpreter_params)
    return Built(cls(model, interpreter, **common, **params), model, interpreter, transform)


def build_attack(
    spec: AttackSpec,
    *,
    model=None,
    interpreter=None,
    progress: bool = False,
    callback: Callable | None = None,
    loader: Callable | None = None,
):
    """The attack that ``spec`` describes, ready to ``run(x, y)``: the only construction path of
    an attack from names (white-box and black-box alike; see the module docstring)."""
    return build(
        spec,
        model=model,
        interpreter=interpreter,
        progress=progress,
        callback=callback,
        loader=loader,
    ).attack


__all__ = ["AttackSpec", "Built", "build", "build_attack", "load_victim", "model_card"]
