"""`orlojd task` and `orlojd dlq`: look at and steer the task queue in the state store.

Thin commands over ``adapters.queue.TaskQueue``; every command takes the same
``--state-dir DIR | --db URL`` as `orlojd status`. Output is a table for people or
JSON (``--format json``) for scripts.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orlojd.cli_options import DbOption, StateDirOption

if TYPE_CHECKING:
    from orlojd.adapters.queue import TaskQueue, TaskView

task_app = typer.Typer(help="Tasks in the queue: list, show, cancel.", no_args_is_help=True, rich_markup_mode=None)
dlq_app = typer.Typer(
    help="The dead-letter queue: list, show, retry, purge.", no_args_is_help=True, rich_markup_mode=None
)

JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table")]


def _queue(db: str | None, state_dir: Path | None) -> TaskQueue:
    from orlojd.adapters.queue import TaskQueue
    from orlojd.adapters.store import Store
    from orlojd.engine.workspace import store_url

    return TaskQueue(Store.open(store_url(Path("."), db, state_dir)))


def _plain(view: TaskView) -> dict[str, Any]:
    data = asdict(view)
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in data.items()}


def _print(views: list[TaskView], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps([_plain(v) for v in views], indent=2, default=str))
        return
    if not views:
        typer.echo("no tasks")
        return
    typer.echo(f"{'ID':34} {'STATE':16} {'ATTEMPTS':8} {'TASK':40} LAST ERROR")
    for v in views:
        error = (v.last_error or "").splitlines()[0][:60] if v.last_error else ""
        typer.echo(f"{v.id:34} {v.state.value:16} {v.attempts}/{v.max_attempts:<6} {v.task_key[:40]:40} {error}")


def _show(queue: TaskQueue, task_id: str) -> None:
    view = queue.get_one(task_id)
    if view is None:
        typer.echo(f"error: no task {task_id!r}", err=True)
        typer.echo("  hint: orlojd task list shows the ids", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(_plain(view), indent=2, default=str))


@task_app.command("list")
def task_list(
    state: Annotated[str | None, typer.Option("--state", help="Only tasks in this state")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    as_json: JsonOption = False,
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Tasks, newest first."""
    from orlojd.adapters.queue import TaskState

    if state is not None and state not in {s.value for s in TaskState}:
        typer.echo(f"error: unknown state {state!r}; use one of {', '.join(s.value for s in TaskState)}", err=True)
        raise typer.Exit(1)
    _print(_queue(db, state_dir).list_all(state, limit), as_json)


@task_app.command("show")
def task_show(task_id: str, db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """One task, everything stored about it, as JSON."""
    _show(_queue(db, state_dir), task_id)


@task_app.command("cancel")
def task_cancel(task_id: str, db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """Cancel a pending, running or waiting task (a running one's result will be refused)."""
    from orlojd.adapters import clock

    if not _queue(db, state_dir).cancel_run(task_id, clock.now()):
        typer.echo(f"error: task {task_id!r} is unknown or already finished", err=True)
        raise typer.Exit(1)
    typer.echo(f"cancelled {task_id}")


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    as_json: JsonOption = False,
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Dead-lettered tasks, newest first."""
    _print(_queue(db, state_dir).list_all("dead_letter", limit), as_json)


@dlq_app.command("show")
def dlq_show(task_id: str, db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """One dead-lettered task, with its last error."""
    _show(_queue(db, state_dir), task_id)


@dlq_app.command("retry")
def dlq_retry(task_id: str, db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """Send a dead-lettered task back to the queue with its attempts reset."""
    from orlojd.adapters import clock

    if not _queue(db, state_dir).retry_dead_letter_run(task_id, clock.now()):
        typer.echo(f"error: task {task_id!r} is not in the dead-letter queue", err=True)
        raise typer.Exit(1)
    typer.echo(f"requeued {task_id}")


@dlq_app.command("purge")
def dlq_purge(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Only those dead-lettered before this long ago")
    ] = "0s",
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Delete dead-lettered tasks (their Task may then be enqueued again)."""
    from orlojd.adapters import clock
    from orlojd.core.durations import DurationError, parse_ms

    try:
        age = timedelta(milliseconds=parse_ms(older_than))
    except DurationError as exc:
        typer.echo(f"error: --older-than: {exc}", err=True)
        raise typer.Exit(1) from None
    count = _queue(db, state_dir).purge_dead_letter_run(clock.now() - age)
    typer.echo(f"purged {count} dead-lettered task{'s' if count != 1 else ''}")
