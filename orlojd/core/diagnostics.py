"""Diagnostics: what is wrong, where, and what to do. Pure values shared by every check.

A ``Problem`` is found against a document path (``("spec", "tools", 0, "name")``); the
loader turns it into a ``Diagnostic`` with file, line and column. Both are plain
frozen values so every check can be tested without files.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

Path = tuple[str | int, ...]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    """A finding about one document, located by its path inside that document."""

    message: str
    path: Path = ()
    severity: Severity = Severity.ERROR


def format_path(path: Path) -> str:
    """('spec', 'tools', 0, 'name') -> 'spec.tools[0].name'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A finding with its place: file, 1-based line and column, object and field."""

    message: str
    file: str
    line: int = 1
    column: int = 1
    kind: str = ""
    name: str = ""
    field: str = ""
    severity: Severity = Severity.ERROR
    related: tuple[str, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def format(self) -> str:
        """``file:line:col: Kind/name: field: message`` (object and field omitted when unknown)."""
        parts = [f"{self.file}:{self.line}:{self.column}"]
        if self.kind or self.name:
            parts.append(f"{self.kind or '?'}/{self.name or '?'}")
        if self.field:
            parts.append(self.field)
        prefix = "" if self.is_error else "warning: "
        parts.append(prefix + self.message)
        return ": ".join(parts)

    def as_json(self) -> dict[str, object]:
        return {
            "severity": self.severity.value,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "kind": self.kind,
            "name": self.name,
            "field": self.field,
            "message": self.message,
        }
