"""The attack registry: ``@register_attack`` records a class under its ``name``; the CLI's
choices, the lab's forms, suites and the invariant tests all read :data:`ATTACKS`
(timm's ``@register_model``: registering an attack is what puts it under test)."""

from __future__ import annotations

from ..errors import ConfigError, unknown_name

ATTACKS: dict = {}


def register_attack(cls=None, *, name: str | None = None):
    """Class decorator (``@register_attack`` or ``@register_attack(name="x")``): register ``cls``
    under ``name`` (default ``cls.name``). Registering another class under a taken name is an
    error."""

    def add(klass):
        from .base import Attack

        if not (isinstance(klass, type) and issubclass(klass, Attack)):
            raise ConfigError(f"register_attack expects an Attack subclass, got {klass!r}")
        key = name or vars(klass).get("name")
        if not isinstance(key, str) or not key:
            raise ConfigError(
                f"{klass.__name__} needs its own class attribute 'name' to be registered"
            )
        if ATTACKS.get(key, klass) is not klass:
            raise ConfigError(f"attack {key!r} is already registered ({ATTACKS[key].__qualname__})")
        ATTACKS[key] = klass
        return klass

    return add if cls is None else add(cls)


def unregister_attack(name: str) -> None:
    """Remove ``name`` from the registry (tests that register a toy attack)."""
    ATTACKS.pop(name, None)


def attack_class(name: str, params=()) -> type:
    """The registered class for ``name``, after checking that it accepts every name in
    ``params``."""
    if name not in ATTACKS:
        raise unknown_name("attack", name, ATTACKS)
    cls = ATTACKS[name]
    unknown = set(params) - set(cls.param_names())
    if unknown:
        raise ConfigError(
            f"attack {name!r} has no parameter(s) {sorted(unknown)}; valid: {cls.param_names()}"
        )
    return cls
