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
from typing import Annotated, NoReturn

import typer

from orlojd.cli_options import DbOption, StateDirOption

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
    from orlojd.cli_tasks import dlq_app, task_app

    app.add_typer(task_app, name="task")
    app.add_typer(dlq_app, name="dlq")


_register_subcommands()


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

    if db is None and state_dir is not None and not (state_dir.resolve() / "state.db").exists():
        fail(
            f"no state store at {state_dir.resolve() / 'state.db'}", "pass the --state-dir the daemon uses, or --db URL"
        )
    store = Store.open(store_url(path, db, state_dir))
    try:
        revision = store.applied_revision_one()
        records = store.status_all()
        history = store.history_all()
        source = store.source_status_one()
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
                },
                indent=2,
            )
        )
        return
    from orlojd.status_view import render_status

    render_status(revision, records, history, source, tty=_tty())


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


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def _seconds(value: str, flag: str) -> float:
    from orlojd.core.durations import DurationError, parse_ms

    try:
        seconds = parse_ms(value) / 1000
    except DurationError as exc:
        fail(f"{flag}: {exc}")
    if seconds <= 0:
        fail(f"{flag}: must be more than 0s")
    return seconds


def _listen(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--listen {value!r}: use HOST:PORT, for example 127.0.0.1:8080")
    return host, int(port)


def _secret(path: Path | None, credential: str, env: dict[str, str]) -> bytes | None:
    if path is None and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / credential
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", "check the path and its permissions")


@app.command()
def serve(
    repo: Annotated[str, typer.Option("--repo", envvar="ORLOJD_REPO", help="Local repository path or remote URL")],
    branch: Annotated[str, typer.Option("--branch", envvar="ORLOJD_BRANCH", help="Branch to apply")] = "main",
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", envvar="ORLOJD_STATE_DIR", help="State folder (SQLite, mirror)")
    ] = None,
    db: DbOption = None,
    listen: Annotated[
        str | None, typer.Option("--listen", envvar="ORLOJD_LISTEN", help="HOST:PORT for webhooks and health")
    ] = None,
    subdir: Annotated[str, typer.Option("--path", envvar="ORLOJD_PATH", help="Manifests folder in the repo")] = "",
    poll_interval: Annotated[
        str, typer.Option("--poll-interval", envvar="ORLOJD_POLL_INTERVAL", help="Remote polling period")
    ] = "60s",
    resync_interval: Annotated[
        str, typer.Option("--resync-interval", envvar="ORLOJD_RESYNC_INTERVAL", help="Drift check period")
    ] = "10m",
    verify_mode: Annotated[
        str, typer.Option("--verify", envvar="ORLOJD_VERIFY", help="Commit signatures: off, head or all")
    ] = "off",
    allowed_signers: Annotated[
        Path | None, typer.Option("--allowed-signers", envvar="ORLOJD_ALLOWED_SIGNERS", help="SSH allowed_signers")
    ] = None,
    gnupg_home: Annotated[
        Path | None, typer.Option("--gnupg-home", envvar="ORLOJD_GNUPG_HOME", help="OpenPGP keyring folder")
    ] = None,
    webhook_secret_file: Annotated[
        Path | None,
        typer.Option("--webhook-secret-file", envvar="ORLOJD_WEBHOOK_SECRET_FILE", help="HMAC key (GitHub, generic)"),
    ] = None,
    gitlab_token_file: Annotated[
        Path | None, typer.Option("--gitlab-token-file", envvar="ORLOJD_GITLAB_TOKEN_FILE", help="GitLab token")
    ] = None,
    log_format: Annotated[LogFormat, typer.Option("--log-format", envvar="ORLOJD_LOG_FORMAT")] = LogFormat.text,
) -> None:
    """Run the GitOps daemon: apply every new commit of the branch, hold the last good one on errors."""
    from orlojd import logs
    from orlojd.adapters.signatures import SignaturePolicy, VerifyMode
    from orlojd.adapters.store import sqlite_url
    from orlojd.core.webhooks import WebhookSecrets
    from orlojd.engine.daemon import Daemon, DaemonOptions

    logs.setup(log_format.value)
    env = dict(os.environ)
    if verify_mode not in {m.value for m in VerifyMode}:
        fail(f"--verify {verify_mode!r}: use off, head or all")
    mode = VerifyMode(verify_mode)
    if mode is not VerifyMode.OFF and allowed_signers is None and gnupg_home is None:
        fail(f"--verify {verify_mode} needs --allowed-signers FILE (SSH) or --gnupg-home DIR (OpenPGP)")
    if state_dir is None:
        local = Path(repo)
        state_dir = (local / ".orlojd") if (local / ".git").exists() else Path(".orlojd")
    state_dir = state_dir.resolve()
    secret = _secret(webhook_secret_file, "webhook-secret", env)
    options = DaemonOptions(
        repo=repo,
        branch=branch,
        state_dir=state_dir,
        db_url=db or sqlite_url(state_dir),
        listen=_listen(listen),
        poll_interval=_seconds(poll_interval, "--poll-interval"),
        resync_interval=_seconds(resync_interval, "--resync-interval"),
        signatures=SignaturePolicy(mode, allowed_signers, gnupg_home),
        webhook_secrets=WebhookSecrets(
            github=secret, gitlab=_secret(gitlab_token_file, "gitlab-token", env), generic=secret
        ),
        subdir=subdir,
    )
    daemon = Daemon(options, env)
    daemon.install_signals()
    raise typer.Exit(daemon.run())


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
