"""`orlojd audit log|verify`, `orlojd notes setup`, `orlojd state rebuild`: the repository as the record.

``audit`` reads only git (``refs/notes/orlojd/audit`` of the repository, by default the one
around the current folder): an auditor needs neither the daemon nor its store. ``notes setup``
configures a clone to fetch the notes (a fresh clone does not). ``state rebuild`` makes an
empty store again from the manifests and the notes (``engine/rebuild.py``).
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from orlojd.cli_options import DbOption, StateDirOption, fail, wants_json

audit_app = typer.Typer(help="Audit records in git notes: log, verify.", no_args_is_help=True, rich_markup_mode=None)
notes_app = typer.Typer(help="Git notes of this repository: setup.", no_args_is_help=True, rich_markup_mode=None)
state_app = typer.Typer(help="The state store: rebuild.", no_args_is_help=True, rich_markup_mode=None)

RepoOption = Annotated[Path, typer.Option("--repo", help="The repository (default: the one around the current folder)")]


def _repo(path: Path) -> Path:
    from orlojd.adapters.gitrepo import locate_repo

    root, _ = locate_repo(path)
    return root


def _since(text: str | None) -> datetime | None:
    """--since: an ISO time (2026-11-25T10:00:00Z) or an age (90s, 15m, 2h, 7d)."""
    if text is None:
        return None
    from orlojd.core.durations import parse_ms

    try:
        return datetime.now(UTC) - timedelta(milliseconds=parse_ms(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--since {text!r} is neither an age nor a time", "for example --since 2h or --since 2026-11-25T10:00:00Z")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@audit_app.command("log")
def audit_log(
    since: Annotated[
        str | None, typer.Option("--since", help="Only records from then on: 2h, 7d or an ISO time")
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="Only records about this: Kind/ns/name, task:<id> (prefix)")
    ] = None,
    output: Annotated[str, typer.Option("--format", help="text or json (one record per line)")] = "text",
    repo: RepoOption = Path("."),
) -> None:
    """The audit records in the repository's notes, oldest first."""
    from orlojd.adapters.notes import read_notes
    from orlojd.core.audit_records import records_of

    as_json = wants_json(output)
    start = _since(since)
    root = _repo(repo)
    lines = [line for note in read_notes(root).values() for line in note]
    records = sorted(records_of(lines), key=lambda r: (r.ts, r.w, r.seq))
    shown = 0
    for record in records:
        if start is not None and datetime.fromisoformat(record.ts.replace("Z", "+00:00")) < start:
            continue
        if subject is not None and not record.subject.startswith(subject):
            continue
        shown += 1
        if as_json:
            typer.echo(record.line())
            continue
        what = " ".join(f"{k}={record.detail[k]}" for k in ("verdict", "reason", "tool") if k in record.detail)
        revision = (record.revision or "-")[:12]
        typer.echo(
            f"{record.ts} {record.w}#{record.seq} {record.event} {record.subject or '-'} by {record.actor} "
            f"@{revision} {what}".rstrip()
        )
    if not as_json and shown == 0:
        typer.echo("no audit records" + (" match" if since or subject else f" in {root}"))


@audit_app.command("verify")
def audit_verify(
    repo: RepoOption = Path("."),
    allowed_signers: Annotated[
        Path | None, typer.Option("--allowed-signers", help="OpenSSH allowed_signers file (default: see help)")
    ] = None,
    state_dir: StateDirOption = None,
    output: Annotated[str, typer.Option("--format", help="text or json")] = "text",
) -> None:
    """Check every notes commit's signature, every writer's chain, and that the notes were not
    rolled back since the last verify. Exit 0 intact, 1 with the first problem named.

    Trusted keys: --allowed-signers, else audit.allowedSigners in orlojd.yaml, else the
    daemon's own key (audit_ed25519.pub in its state folder).
    """
    from orlojd.engine.audit_verify import daemon_allowed_signers, verify
    from orlojd.settings import load_settings

    as_json = wants_json(output)
    root = _repo(repo)
    with tempfile.TemporaryDirectory() as scratch:
        signers = allowed_signers
        if signers is None:
            configured = load_settings(root).audit.allowed_signers
            if configured:
                signers = (root / configured) if not Path(configured).is_absolute() else Path(configured)
            else:
                state = state_dir or root / load_settings(root).state_dir
                signers = daemon_allowed_signers(state, Path(scratch) / "allowed_signers")
        report = verify(root, signers)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "tip": report.tip,
                    "commits": report.commits,
                    "records": report.records,
                    "problems": [{"kind": p.kind, "message": p.message, "commit": p.commit} for p in report.problems],
                },
                indent=2,
            )
        )
    elif report.ok:
        where = "no audit notes yet" if report.tip is None else f"tip {report.tip[:12]}"
        typer.echo(f"ok: {report.commits} signed notes commits, {report.records} records, chains whole ({where})")
    else:
        first = report.problems[0]
        typer.echo(f"error: {first.message}", err=True)
        for more in report.problems[1:6]:
            typer.echo(f"  also: {more.message}", err=True)
    raise typer.Exit(0 if report.ok else 1)


@notes_app.command("setup")
def notes_setup(
    repo: RepoOption = Path("."),
    remote: Annotated[str, typer.Option("--remote", help="The remote the notes come from")] = "origin",
    writer: Annotated[
        bool, typer.Option("--writer", help="Fetch into a tracking ref (for a clone that writes)")
    ] = False,
) -> None:
    """Make `git fetch` bring the audit notes (a fresh clone does not), and `git log` show them."""
    from orlojd.adapters.notes import setup_clone

    root = _repo(repo)
    for line in setup_clone(root, remote, writer):
        typer.echo(f"set {line}")
    typer.echo(f"now: git -C {root} fetch {remote}")


@state_app.command("rebuild")
def state_rebuild(
    repo: RepoOption = Path("."),
    rev: Annotated[str | None, typer.Option("--rev", help="Revision to restore (default: the last applied)")] = None,
    writer: Annotated[
        str | None, typer.Option("--writer", help="Whose audit chain to restore, when the notes hold several")
    ] = None,
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Rebuild an EMPTY store from the repository alone: the inventory at the last applied
    revision (from the audit notes) and the audit index. No Task is queued again."""
    from orlojd.engine.rebuild import rebuild
    from orlojd.engine.workspace import open_workspace

    ws = open_workspace(repo, db, state_dir)
    store = ws.open_store()
    try:
        done = rebuild(ws, store, rev, writer)
    finally:
        store.close()
    typer.echo(
        f"rebuilt {ws.db_url}: {done.objects} objects at {done.revision[:12]}, "
        f"{done.events} audit events of {done.writer or 'no writer (no notes)'}"
    )
