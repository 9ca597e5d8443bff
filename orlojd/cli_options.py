"""Command-line options shared by several command modules (one definition, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

DbOption = Annotated[
    str | None,
    typer.Option("--db", envvar="ORLOJD_DB", help="State store URL (default: SQLite in the state folder)"),
]
StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar="ORLOJD_STATE_DIR", help="State folder (default: from orlojd.yaml, .orlojd/)"),
]


def fail(message: str, hint: str = "", code: int = 1) -> NoReturn:
    """Print ``error: message`` (and its hint) on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"  hint: {hint}", err=True)
    raise typer.Exit(code)


def wants_json(output: str, as_json: bool = False) -> bool:
    """``--format text|json`` (and the ``--json`` shorthand where a command has it): True for JSON;
    any other format is an error that names the choices."""
    if output not in ("text", "json"):
        fail(f"unknown --format {output!r}", "use text or json")
    return as_json or output == "json"
