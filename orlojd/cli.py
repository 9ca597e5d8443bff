"""The `orlojd` command line: parse arguments, call the engine, print, map errors to exit codes.

Commands stay thin. Heavy modules (pydantic models, git, the store, litellm) are
imported inside commands so that `orlojd --help` starts fast. An ``OrlojError``
prints as ``error: ...`` with its hint and exits 1; nothing prints a traceback
unless ORLOJD_DEBUG=1.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

app = typer.Typer(
    name="orlojd",
    help="GitOps for AI agents: git is the system of record for agents, tools, permissions and budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


PathArg = Annotated[Path, typer.Argument(help="Folder (or file) with the manifests", show_default=True)]
RevOption = Annotated[
    str | None, typer.Option("--rev", help="Read this git revision instead of the working tree")
]


def fail(message: str, hint: str = "", code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"  hint: {hint}", err=True)
    raise typer.Exit(code)


@app.command()
def validate(
    path: PathArg = Path("."),
    rev: RevOption = None,
    output: Annotated[OutputFormat, typer.Option("--format", help="text or json")] = OutputFormat.text,
    no_resolve: Annotated[
        bool,
        typer.Option("--no-resolve", help="Check each object on its own: no references, no duplicate check"),
    ] = False,
) -> None:
    """Check every manifest; report all errors at once. Exit 0 valid, 1 invalid."""
    from orlojd.sources import load

    desired, snapshot = load(path, rev, resolve=not no_resolve)
    if output is OutputFormat.json:
        typer.echo(json.dumps({
            "valid": desired.ok,
            "revision": snapshot.commit,
            "files": desired.files,
            "objects": len(desired.objects),
            "errors": [d.as_json() for d in desired.errors],
            "warnings": [d.as_json() for d in desired.warnings],
        }, indent=2))
    else:
        for diagnostic in desired.diagnostics:
            typer.echo(diagnostic.format())
        verdict = "valid" if desired.ok else "invalid"
        typer.echo(
            f"{verdict}: {len(desired.objects)} objects in {desired.files} files, "
            f"{len(desired.errors)} errors, {len(desired.warnings)} warnings"
            + (f" (revision {snapshot.commit[:12]})" if snapshot.commit else "")
        )
    raise typer.Exit(0 if desired.ok else 1)


@app.command()
def schema(
    out: Annotated[Path | None, typer.Option("--out", help="Write one JSON Schema file per kind here")] = None,
) -> None:
    """JSON Schema for every kind (for editors: yaml-language-server)."""
    from orlojd.schema import all_schemas, write_schemas

    if out is None:
        typer.echo(json.dumps(all_schemas(), indent=2, sort_keys=True))
        return
    for written in write_schemas(out):
        typer.echo(str(written))


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="New folder for the repository")],
    branch: Annotated[str, typer.Option(help="Name of the first branch")] = "main",
) -> None:
    """Create a git repository with a working example set and a first commit."""
    from orlojd.scaffold import init_repository

    commit = init_repository(directory, branch)
    typer.echo(f"initialised {directory} at {commit[:12]} on branch {branch}")
    typer.echo(f"next: orlojd validate {directory} && orlojd plan {directory}")


def main() -> None:
    """Console-script entry point: run the app, turn orlojd errors into messages and exit codes."""
    from orlojd.errors import OrlojError

    try:
        app()
    except OrlojError as exc:
        if os.environ.get("ORLOJD_DEBUG"):
            raise
        typer.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"  hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last line of defence: no traceback reaches a user
        if os.environ.get("ORLOJD_DEBUG"):
            raise
        typer.echo(f"error: internal error: {type(exc).__name__}: {exc}", err=True)
        typer.echo("  hint: rerun with ORLOJD_DEBUG=1 for the traceback and report it", err=True)
        sys.exit(1)
