"""One exception family for idlsec. The CLI turns every ``IdlsecError`` into ``error: <message>``
and exit code 2; any other exception is a bug."""


class IdlsecError(Exception):
    """Base class of every error idlsec raises on purpose."""


class InputError(IdlsecError, ValueError):
    """Bad tensors: wrong shape, dtype, range, NaN/Inf, mismatched lengths."""


class ConfigError(IdlsecError, ValueError):
    """Bad configuration: unknown names, out-of-range hyperparameters, inapplicable combinations."""


class ChecksumError(IdlsecError):
    """A file's SHA-256 (or official MD5) does not match the expected value."""


class ResourceError(IdlsecError):
    """Data or weights cannot be found locally and cannot be downloaded."""


class QueryBudgetExceeded(IdlsecError):
    """A black-box oracle was asked for more queries than its budget allows."""


def unknown_name(kind: str, name: str, valid) -> ConfigError:
    """The error for an unknown registry name, listing the valid ones."""
    return ConfigError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")
