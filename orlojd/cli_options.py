"""Command-line options shared by several command modules (one definition, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DbOption = Annotated[
    str | None,
    typer.Option("--db", envvar="ORLOJD_DB", help="State store URL (default: SQLite in the state folder)"),
]
StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar="ORLOJD_STATE_DIR", help="State folder (default: from orlojd.yaml, .orlojd/)"),
]
