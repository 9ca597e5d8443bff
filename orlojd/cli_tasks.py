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

from orlojd.cli_options import DbOption, StateDirOption, wants_json

if TYPE_CHECKING:
    from orlojd.adapters.budgets import TaskUsage
    from orlojd.adapters.queue import TaskQueue, TaskView

task_app = typer.Typer(
    help="Tasks in the queue: list, show, cancel, pause, resume.", no_args_is_help=True, rich_markup_mode=None
)
dlq_app = typer.Typer(
    help="The dead-letter queue: list, show, retry, purge.", no_args_is_help=True, rich_markup_mode=None
)

JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table")]


def _queue(db: str | None, state_dir: Path | None) -> TaskQueue:
    from orlojd.adapters.queue import TaskQueue
    from orlojd.adapters.store import Store
    from orlojd.engine.workspace import store_url

    return TaskQueue(Store.open(store_url(Path("."), db, state_dir)))


def _conditions(queue: TaskQueue, views: list[TaskView]) -> dict[str, list[dict[str, str]]]:
    """Each task's conditions (QueueWaitExceeded, Paused, Unschedulable) by id."""
    from orlojd.adapters import clock
    from orlojd.adapters.worker_registry import LOST_AFTER, WorkerRegistry, offers
    from orlojd.core.durations import parse_ms
    from orlojd.core.task_health import task_conditions
    from orlojd.settings import load_settings

    now = clock.now()
    threshold = timedelta(milliseconds=parse_ms(load_settings(Path(".")).workers.queue_wait_warning))
    live = [w.labels for w in WorkerRegistry(queue.store).list_all(now, LOST_AFTER) if w.state.value == "live"]
    return {
        v.id: [
            c.as_json()
            for c in task_conditions(
                state=v.state.value,
                paused=v.paused,
                available_at=v.available_at,
                labels=v.labels,
                now=now,
                queue_wait=threshold,
                labels_offered=any(offers(labels, v.labels) for labels in live),
            )
        ]
        for v in views
    }


OUTPUT_LINES = 20  # lines of a task's output `orlojd task show --format text` prints


def _usage(queue: TaskQueue, views: list[TaskView]) -> dict[str, TaskUsage]:
    """Each task's model usage (calls, tokens, cost) from the budget ledger, by id; all zero when none."""
    from orlojd.adapters.budgets import BudgetLedger, TaskUsage

    found = BudgetLedger(queue.store).usage_by_task_all(v.id for v in views)
    return {v.id: found.get(v.id, TaskUsage()) for v in views}


def _plain(view: TaskView, conditions: list[dict[str, str]], usage: TaskUsage | None = None) -> dict[str, Any]:
    data = asdict(view)
    data["conditions"] = conditions
    if usage is not None:
        data["usage"] = usage.as_json()
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in data.items()}


def _print(queue: TaskQueue, views: list[TaskView], as_json: bool) -> None:
    conditions = _conditions(queue, views)
    if as_json:
        usage = _usage(queue, views)
        typer.echo(json.dumps([_plain(v, conditions[v.id], usage[v.id]) for v in views], indent=2, default=str))
        return
    if not views:
        typer.echo("no tasks")
        return
    typer.echo(f"{'ID':34} {'STATE':16} {'ATTEMPTS':8} {'TASK':40} NOTE")
    for v in views:
        notes = ", ".join(c["type"] for c in conditions[v.id])
        error = (v.last_error or "").splitlines()[0][:60] if v.last_error else ""
        note = "; ".join(n for n in (notes, error) if n)
        typer.echo(f"{v.id:34} {v.state.value:16} {v.attempts}/{v.max_attempts:<6} {v.task_key[:40]:40} {note}")


def usage_text(calls: int, tokens: int, cost: float) -> str:
    """``3 calls, 1,234 tokens, $0.0123``."""
    return f"{calls} call{'s' if calls != 1 else ''}, {tokens:,} tokens, ${cost:.4f}"


def _output_lines(result: dict[str, Any] | None) -> list[str]:
    """The first lines of a result's ``output`` (text as is, anything else as JSON); none without one."""
    if not result or result.get("output") in (None, ""):
        return []
    output = result["output"]
    text = output if isinstance(output, str) else json.dumps(output, indent=2, default=str)
    lines = text.splitlines()
    if len(lines) > OUTPUT_LINES:
        return [*lines[:OUTPUT_LINES], f"... ({len(lines) - OUTPUT_LINES} more lines; --format json has all)"]
    return lines


def _show_text(view: TaskView, conditions: list[dict[str, str]], usage: TaskUsage) -> None:
    def when(moment: Any) -> str:
        return moment.isoformat() if moment is not None else "-"

    typer.echo(f"id: {view.id}")
    typer.echo(f"task: {view.task_key}")
    if view.agent:
        typer.echo(f"agent: {view.agent}")
    typer.echo(f"state: {view.state.value}{' (paused)' if view.paused else ''}")
    typer.echo(f"attempts: {view.attempts}/{view.max_attempts}")
    typer.echo(f"created: {when(view.created_at)}  finished: {when(view.finished_at)}")
    if conditions:
        typer.echo("conditions: " + ", ".join(c.get("type", "") for c in conditions))
    if view.last_error:
        typer.echo(f"last error: {view.last_error.splitlines()[0]}")
    line = "usage: " + usage_text(usage.calls, usage.tokens, usage.cost)
    if usage.unsettled:
        line += f" ({usage.unsettled} call{'s' if usage.unsettled != 1 else ''} still at the estimate)"
    typer.echo(line)
    lines = _output_lines(view.result)
    if lines:
        typer.echo("output:")
        for text in lines:
            typer.echo(f"  {text}")


def _show(queue: TaskQueue, task_id: str, as_text: bool = False) -> None:
    view = queue.get_one(task_id)
    if view is None:
        typer.echo(f"error: no task {task_id!r}", err=True)
        typer.echo("  hint: orlojd task list shows the ids", err=True)
        raise typer.Exit(1)
    conditions = _conditions(queue, [view])[view.id]
    usage = _usage(queue, [view])[view.id]
    if as_text:
        _show_text(view, conditions, usage)
        return
    typer.echo(json.dumps(_plain(view, conditions, usage), indent=2, default=str))


ShowFormatOption = Annotated[
    str,
    typer.Option(
        "--format", help="json (the default: everything stored) or text (a summary with the output's first lines)"
    ),
]


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
    queue = _queue(db, state_dir)
    _print(queue, queue.list_all(state, limit), as_json)


@task_app.command("show")
def task_show(
    task_id: str,
    output: ShowFormatOption = "json",
    as_json: JsonOption = False,
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """One task, everything stored about it (with its model usage), as JSON; --format text for people."""
    _show(_queue(db, state_dir), task_id, as_text=not wants_json(output, as_json))


@task_app.command("cancel")
def task_cancel(task_id: str, db: DbOption = None, state_dir: StateDirOption = None) -> None:
    """Cancel a pending, running or waiting task (a running one's result will be refused)."""
    from orlojd.adapters import clock

    if not _queue(db, state_dir).cancel_run(task_id, clock.now()):
        typer.echo(f"error: task {task_id!r} is unknown or already finished", err=True)
        raise typer.Exit(1)
    typer.echo(f"cancelled {task_id}")


RequestIdOption = Annotated[
    str | None,
    typer.Option(
        "--request-id",
        help="Id of this request (default: a new one, printed); retrying with the same id changes nothing",
    ),
]


def _control(task_id: str, request_id: str | None, pause: bool, db: str | None, state_dir: Path | None) -> None:
    import uuid

    from orlojd.adapters import clock
    from orlojd.adapters.queue import ControlOutcome

    request = request_id or uuid.uuid4().hex
    if len(request) > 100:
        typer.echo("error: --request-id: at most 100 characters", err=True)
        raise typer.Exit(1)
    queue = _queue(db, state_dir)
    act = queue.pause_run if pause else queue.resume_run
    outcome = act(task_id, request, clock.now())
    verb = "paused" if pause else "resumed"
    if outcome is ControlOutcome.UNKNOWN:
        typer.echo(f"error: no task {task_id!r}", err=True)
        typer.echo("  hint: orlojd task list shows the ids", err=True)
        raise typer.Exit(1)
    if outcome is ControlOutcome.FINISHED:
        typer.echo(f"error: task {task_id} already finished; nothing to {'pause' if pause else 'resume'}", err=True)
        raise typer.Exit(1)
    if outcome is ControlOutcome.DUPLICATE:
        typer.echo(f"request {request} was already applied to {task_id}; nothing changed")
        return
    typer.echo(f"{verb} {task_id} (request {request})")


@task_app.command("pause")
def task_pause(
    task_id: str, request_id: RequestIdOption = None, db: DbOption = None, state_dir: StateDirOption = None
) -> None:
    """Hold a task: no new attempt starts until it is resumed (one already running finishes)."""
    _control(task_id, request_id, True, db, state_dir)


@task_app.command("resume")
def task_resume(
    task_id: str, request_id: RequestIdOption = None, db: DbOption = None, state_dir: StateDirOption = None
) -> None:
    """Let a paused task run again."""
    _control(task_id, request_id, False, db, state_dir)


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    as_json: JsonOption = False,
    db: DbOption = None,
    state_dir: StateDirOption = None,
) -> None:
    """Dead-lettered tasks, newest first."""
    queue = _queue(db, state_dir)
    _print(queue, queue.list_all("dead_letter", limit), as_json)


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
