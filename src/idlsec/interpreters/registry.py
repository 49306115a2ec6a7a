"""The interpreter registry: ``@register_interpreter`` records a class under its ``name``; the CLI's
choices, the lab's forms and the invariant tests read :data:`INTERPRETERS`."""

from __future__ import annotations

from ..errors import ConfigError, unknown_name

INTERPRETERS: dict = {}


def register_interpreter(cls=None, *, name: str | None = None):
    """Class decorator (``@register_interpreter`` or ``@register_interpreter(name="x")``)."""

    def add(klass):
        from .base import Interpreter

        if not (isinstance(klass, type) and issubclass(klass, Interpreter)):
            raise ConfigError(
                f"register_interpreter expects an Interpreter subclass, got {klass!r}"
            )
        key = name or vars(klass).get("name")
        if not isinstance(key, str) or not key:
            raise ConfigError(
                f"{klass.__name__} needs its own class attribute 'name' to be registered"
            )
        if INTERPRETERS.get(key, klass) is not klass:
            raise ConfigError(
                f"interpreter {key!r} is already registered ({INTERPRETERS[key].__qualname__})"
            )
        INTERPRETERS[key] = klass
        return klass

    return add if cls is None else add(cls)


def unregister_interpreter(name: str) -> None:
    INTERPRETERS.pop(name, None)


def get_interpreter(name: str, model, **kwargs):
    """Build a registered interpreter by name for ``model``."""
    if name not in INTERPRETERS:
        raise unknown_name("interpreter", name, INTERPRETERS)
    return INTERPRETERS[name](model, **kwargs)
