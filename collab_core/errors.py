"""The errors the core raises for bad input: one line each, shown as they are."""

from numbers import Integral


class CollabError(Exception):
    """Base of every error caused by the user's input, config or files (CLI exit status 2)."""


class DataError(CollabError, ValueError):
    """A dataset cannot be found, downloaded, read or validated."""


class ConfigError(CollabError, ValueError):
    """A training or analysis option is out of its allowed range."""


class TrainingDiverged(CollabError, RuntimeError):
    """The loss became non-finite during training."""


class TrainingCancelled(CollabError):
    """The caller asked the training loop to stop."""


def check_n(n: int, what: str = "n") -> int:
    """n as an int, or a ConfigError if it is not a positive integer."""
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ConfigError(f"{what} must be a positive integer, not {n!r}")
    return int(n)
