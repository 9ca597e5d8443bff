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
