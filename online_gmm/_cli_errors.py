"""The command line's two kinds of error, each answered with one line on stderr: a user's mistake
(:class:`Mistake`, exit status 2) and a running job's failure (:class:`JobFailed`, exit status 1),
and the error types that count as such (see :mod:`online_gmm.cli`).
"""

from __future__ import annotations

import sys

import click


class Mistake(click.ClickException):
    """A user's mistake: shown as one line (``Error: ...``) on stderr, exit status 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


class JobFailed(click.ClickException):
    """A running job failed (I/O, broker): one line, exit status 1; a restart resumes it."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


def _error_types(*extra: tuple[str, str]) -> tuple[type[BaseException], ...]:
    """OSError plus the project's error classes whose modules are loaded (no import just to check)."""
    kinds: list[type[BaseException]] = [OSError]
    for module, name in (("online_gmm.config", "ConfigError"), ("online_gmm.checkpoint", "CheckpointError"),
                         ("connectors.base", "ConnectorError"), *extra):
        loaded = sys.modules.get(module)
        if loaded is not None:
            kinds.append(getattr(loaded, name))
    return tuple(kinds)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename!r}"
    return str(exc) or type(exc).__name__
