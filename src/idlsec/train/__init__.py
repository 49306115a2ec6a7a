"""Training and evaluation of classifiers (the zoo's own models, defenses build on this)."""

import sys


def command_line() -> str | None:
    """The ``idlsec ...`` command this process runs (console script or ``python -m idlsec``)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0.endswith(("idlsec", "__main__.py")):
        return "idlsec " + " ".join(sys.argv[1:])
    return None
