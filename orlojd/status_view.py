"""`orlojd status` for people: a rich table on a terminal, plain aligned lines otherwise."""

from __future__ import annotations

from typing import Any

from orlojd.adapters.store import StatusRecord
from orlojd.adapters.worker_registry import WorkerView


def worker_json(worker: WorkerView) -> dict[str, Any]:
    return {
        "id": worker.id,
        "state": worker.state.value,
        "hostname": worker.hostname,
        "pid": worker.pid,
        "embedded": worker.embedded,
        "labels": worker.labels,
        "capacity": worker.capacity,
        "started_at": worker.started_at.isoformat(),
        "heartbeat_at": worker.heartbeat_at.isoformat(),
    }


def _condition(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    return next((c for c in conditions if c.get("type") == kind), {})


def render_status(
    revision: str | None,
    records: list[StatusRecord],
    history: list[dict[str, Any]],
    source: dict[str, Any] | None,
    tty: bool,
    tasks: dict[str, int] | None = None,
    workers: list[WorkerView] | None = None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(no_color=not tty, highlight=False, soft_wrap=not tty)
    console.print(f"revision: {revision or '(nothing applied yet)'}")
    if source is not None:
        active = next((c for c in source.get("conditions", []) if c.get("status") == "True"), None)
        if active is not None:
            console.print(
                f"source: {source.get('repo')} {source.get('branch')}: {active['type']} "
                f"({active['reason']}): {active['message']}",
                markup=False,
            )
    table = Table(box=None, show_edge=False, pad_edge=False)
    for column in ("KIND", "NAMESPACE", "NAME", "READY", "REASON", "DIGEST"):
        table.add_column(column)
    for record in records:
        ready = _condition(record.conditions, "Ready")
        status = ready.get("status", "Unknown")
        style = "green" if status == "True" else "red"
        table.add_row(
            record.key.kind,
            record.key.namespace,
            record.key.name,
            f"[{style}]{status}[/{style}]" if tty else status,
            ready.get("reason", ""),
            record.digest.removeprefix("sha256:")[:12],
        )
    console.print(table)
    if history:
        last = history[0]
        console.print(f"last reconcile: {last['result']} {last['revision'][:12]} at {last['finished_at']}")
    if tasks is not None and any(tasks.values()):
        console.print("tasks: " + ", ".join(f"{count} {state}" for state, count in tasks.items() if count))
    if workers:
        table = Table(box=None, show_edge=False, pad_edge=False)
        for column in ("WORKER", "STATE", "CAPACITY", "LABELS", "LAST HEARTBEAT"):
            table.add_column(column)
        for worker in workers:
            labels = ",".join(f"{k}={v}" for k, v in sorted(worker.labels.items())) or "-"
            when = worker.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S")
            table.add_row(worker.id, worker.state.value, str(worker.capacity), labels, when)
        console.print(table, markup=False)
