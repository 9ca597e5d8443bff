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
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from orlojd.cli_options import DbOption, StateDirOption, fail

app = typer.Typer(
    name="orlojd",
    help="GitOps for AI agents: git is the system of record for agents, tools, permissions and budgets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register_subcommands() -> None:
    from orlojd.cli_approvals import approvals_app, approve, deny
    from orlojd.cli_audit import audit_app, notes_app, state_app
    from orlojd.cli_governance import can_i
    from orlojd.cli_serve import serve, worker
    from orlojd.cli_tasks import dlq_app, task_app

    app.add_typer(task_app, name="task")
    app.add_typer(dlq_app, name="dlq")
    app.command()(serve)
    app.command()(worker)
    app.command("can-i")(can_i)
    app.command()(approve)
    app.command()(deny)
    app.add_typer(approvals_app, name="approvals")
    app.add_typer(audit_app, name="audit")
    app.add_typer(notes_app, name="notes")
    app.add_typer(state_app, name="state")


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


PathArg = Annotated[Path, typer.Argument(help="Folder (or file) with the manifests", show_default=True)]
RevOption = Annotated[str | None, typer.Option("--rev", help="Read this git revision instead of the working tree")]


def _print_version(value: bool) -> None:
    if value:
        from orlojd import __version__

        typer.echo(f"orlojd {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version")
    ] = False,
) -> None:
    """GitOps for AI agents: git is the system of record for agents, tools, permissions and budgets."""


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


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
        typer.echo(
            json.dumps(
                {
                    "valid": desired.ok,
                    "revision": snapshot.commit,
                    "files": desired.files,
                    "objects": len(desired.objects),
                    "errors": [d.as_json() for d in desired.errors],
                    "warnings": [d.as_json() for d in desired.warnings],
                },
                indent=2,
            )
        )
    else:
        for diagnostic in desired.diagnostics:
            typer.echo(diagnostic.format())
        verdict = "valid" if desired.ok else "invalid"
        typer.echo(
            f"{verdict}: {_count(len(desired.objects), 'object')} in {_count(desired.files, 'file')}, "
            f"{_count(len(desired.errors), 'error')}, {_count(len(desired.warnings), 'warning')}"
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


class PlanFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def _tty() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


@app.command()
def plan(
    path: PathArg = Path("."),
    rev: Annotated[str, typer.Option("--rev", help="Revision to plan")] = "HEAD",
    base: Annotated[str | None, typer.Option("--base", help="Pull-request base revision")] = None,
    head: Annotated[str | None, typer.Option("--head", help="Pull-request head revision")] = None,
    output: Annotated[PlanFormat, typer.Option("--format", help="text, markdown or json")] = PlanFormat.text,
    out: Annotated[Path | None, typer.Option("--out", help="Save the plan (JSON) for 'apply --plan'")] = None,
    db: DbOption = None,
    state_dir: StateDirOption = None,
    confirm_prune: Annotated[bool, typer.Option("--confirm-prune", help="Allow guarded deletions")] = False,
) -> None:
    """What apply would change. Exit 0 none, 2 changes, 3 changes that widen governance, 1 error."""
    from orlojd.engine.workspace import open_workspace
    from orlojd.render import render_json, render_markdown, render_text

    if (base is None) != (head is None):
        fail("--base and --head go together", "orlojd plan --base main --head my-branch")
    ws = open_workspace(path, db, state_dir)
    if base is not None and head is not None:
        from orlojd.engine.planning import plan_pull_request

        report = plan_pull_request(ws, base, head)
    else:
        from orlojd.engine.planning import plan_revision

        store = ws.open_store()
        try:
            report = plan_revision(ws, store, rev, confirm_prune).report
        finally:
            store.close()
    if output is PlanFormat.json:
        typer.echo(render_json(report), nl=False)
    elif output is PlanFormat.markdown:
        typer.echo("\n".join(render_markdown(report)))
    else:
        typer.echo(render_text(report, colour=_tty()), nl=False)
    if out is not None:
        out.write_text(render_json(report))
    raise typer.Exit(report.exit_code)


@app.command()
def apply(
    path: PathArg = Path("."),
    rev: Annotated[str, typer.Option("--rev", help="Revision to apply")] = "HEAD",
    file: Annotated[
        Path | None, typer.Option("-f", "--file", help="Commit this manifest into the repository, then apply")
    ] = None,
    saved_plan: Annotated[Path | None, typer.Option("--plan", help="Apply only if this saved plan still holds")] = None,
    db: DbOption = None,
    state_dir: StateDirOption = None,
    confirm_prune: Annotated[bool, typer.Option("--confirm-prune", help="Allow guarded deletions")] = False,
) -> None:
    """Apply a revision in stage order. Idempotent: the same revision twice writes nothing."""
    from orlojd.engine.applying import apply_revision, commit_manifest
    from orlojd.engine.workspace import open_workspace
    from orlojd.render import closing_line

    ws = open_workspace(path, db, state_dir)
    if file is not None:
        commit = commit_manifest(ws, file)
        typer.echo(f"committed {file} as {commit[:12]}")
        rev = commit
    store = ws.open_store()
    try:
        result = apply_revision(ws, store, rev, confirm_prune, saved_plan)
    finally:
        store.close()
    report = result.planned.report
    for change in report.plan.changes:
        if change.action.value != "unchanged":
            typer.echo(f"{change.key.short} {change.action.value}" + (f" ({change.reason})" if change.reason else ""))
    verb = "applied" if result.written else "nothing to do at"
    typer.echo(f"{verb} {report.head[:12]}: {closing_line(report).removeprefix('Plan: ')}")


@app.command()
def status(
    path: PathArg = Path("."),
    output: Annotated[OutputFormat, typer.Option("--format", help="text or json")] = OutputFormat.text,
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """The applied revision, the daemon's source condition and every object's conditions."""
    from orlojd.adapters.store import Store
    from orlojd.engine.workspace import store_url
    from orlojd.status_view import agent_usage, render_status, worker_json

    if db is None and state_dir is not None and not (state_dir.resolve() / "state.db").exists():
        fail(
            f"no state store at {state_dir.resolve() / 'state.db'}", "pass the --state-dir the daemon uses, or --db URL"
        )
    from orlojd.adapters import clock
    from orlojd.adapters.queue import TaskQueue
    from orlojd.adapters.worker_registry import LOST_AFTER, WorkerRegistry

    store = Store.open(store_url(path, db, state_dir))
    try:
        revision = store.applied_revision_one()
        records = store.status_all()
        history = store.history_all()
        source = store.source_status_one()
        workers = WorkerRegistry(store).list_all(clock.now(), LOST_AFTER)
        tasks = TaskQueue(store).counts_all()
        usage = agent_usage(store, clock.now())
    finally:
        store.close()
    if output is OutputFormat.json:
        typer.echo(
            json.dumps(
                {
                    "revision": revision,
                    "objects": [
                        {
                            "kind": r.key.kind,
                            "namespace": r.key.namespace,
                            "name": r.key.name,
                            "digest": r.digest,
                            "conditions": r.conditions,
                        }
                        for r in records
                    ],
                    "history": history,
                    "source": source,
                    "tasks": tasks,
                    "workers": [worker_json(w) for w in workers],
                    "usage": usage,
                },
                indent=2,
            )
        )
        return
    render_status(revision, records, history, source, tty=_tty(), tasks=tasks, workers=workers, usage=usage)


@app.command()
def demo(
    directory: Annotated[Path, typer.Argument(help="New folder for the demo (repository, origin, state)")] = Path(
        "orlojd-demo"
    ),
) -> None:
    """The real loop on embedded defaults: init, push, orlojd serve, commit and push a change, status."""
    from orlojd.engine.demo import run_demo

    def show_status(state: Path) -> None:
        status(Path("."), OutputFormat.text, None, state)

    run_demo(directory, typer.echo, show_status)


def _object_key(text: str) -> tuple[str, str, str]:
    parts = text.split("/")
    if len(parts) == 2:
        return parts[0], "default", parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    fail(f"{text!r} is not Kind/name or Kind/namespace/name", "for example: orlojd suspend Agent/compliance-checker")


def _toggle_suspension(
    target: str, suspend: bool, reason: str, path: Path, db: str | None, state_dir: Path | None
) -> None:
    from orlojd.adapters import clock
    from orlojd.adapters.store import Store
    from orlojd.core.keys import ResourceKey
    from orlojd.core.manifests.registry import canonical_kind
    from orlojd.engine.workspace import store_url

    raw_kind, namespace, name = _object_key(target)
    kind = canonical_kind(raw_kind)
    if kind is None:
        fail(f"unknown kind {raw_kind!r}", "use a kind such as Agent, Tool, Task or TaskSchedule")
    key = ResourceKey(kind, namespace, name)
    store = Store.open(store_url(path, db, state_dir))
    try:
        if key not in store.inventory_digests_all() and suspend:
            fail(f"{key.short} is not applied", "orlojd status lists the applied objects")
        changed = store.suspend_run(key, reason, clock.now()) if suspend else store.resume_run(key)
    finally:
        store.close()
    verb = "suspended" if suspend else "resumed"
    typer.echo(f"{key.short} {verb}" if changed else f"{key.short} was already {verb}")
    if changed:
        typer.echo("takes effect at the next reconcile (a push, a webhook, the resync, or orlojd apply)")


@app.command()
def suspend(
    target: Annotated[str, typer.Argument(help="Kind/name or Kind/namespace/name")],
    reason: Annotated[str, typer.Option("--reason", help="Why, for orlojd status")] = "",
    path: Annotated[Path, typer.Option("--path", help="Repository folder (for its state store)")] = Path("."),
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Stop changing one object: it is still planned and reported, never written, until resumed."""
    _toggle_suspension(target, True, reason, path, db, state_dir)


@app.command()
def resume(
    target: Annotated[str, typer.Argument(help="Kind/name or Kind/namespace/name")],
    path: Annotated[Path, typer.Option("--path", help="Repository folder (for its state store)")] = Path("."),
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Undo `orlojd suspend`: the object follows git again."""
    _toggle_suspension(target, False, "", path, db, state_dir)


_register_subcommands()


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
