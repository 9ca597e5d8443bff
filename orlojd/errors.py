"""The error types users see. Every one says what is wrong and what to do next.

Adapters wrap foreign errors (git, SQLAlchemy, litellm) into these at the edge; the
CLI prints ``error: <message>`` plus the hint and exits 1, never a traceback.
"""

from __future__ import annotations


class OrlojError(Exception):
    """Root of every orlojd error; ``hint`` is the next step for the user."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class GitError(OrlojError):
    """A git command failed: a missing repository, an unknown revision, a refused push."""


class ConfigError(OrlojError):
    """orlojd.yaml or a command-line setting is invalid."""


class UsageError(OrlojError):
    """A command was called with arguments that cannot work together."""
