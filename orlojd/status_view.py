"""`orlojd status` for people: a rich table on a terminal, plain aligned lines otherwise."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from orlojd.adapters.store import StatusRecord
from orlojd.adapters.worker_registry import WorkerView

if TYPE_CHECKING:
    from orlojd.adapters.budgets import AgentUsage
    from orlojd.adapters.store import Store


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


def usage_json(total: dict[str, AgentUsage], today: dict[str, AgentUsage]) -> dict[str, Any]:
    """``{"agents": {agent: {calls, tokens, cost, today: {calls, tokens, cost}}}}``, agents sorted."""
    from orlojd.adapters.budgets import AgentUsage

    return {
        "agents": {
            agent: {**total[agent].as_json(), "today": today.get(agent, AgentUsage()).as_json()}
            for agent in sorted(total)
        }
    }


def agent_usage(store: Store, now: datetime) -> dict[str, Any]:
    """Every agent's model usage in total and since this UTC day's midnight, from the budget ledger."""
    from orlojd.adapters.budgets import BudgetLedger
    from orlojd.core.budgets import day_start

    ledger = BudgetLedger(store)
    return usage_json(ledger.usage_by_agent_all(None), ledger.usage_by_agent_all(day_start(now)))


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
    usage: dict[str, Any] | None = None,
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
    agents = (usage or {}).get("agents", {})
    if agents:
        table = Table(box=None, show_edge=False, pad_edge=False)
        for column in ("AGENT", "CALLS TODAY", "TOKENS TODAY", "COST TODAY", "CALLS", "TOKENS", "COST"):
            table.add_column(column, justify="left" if column == "AGENT" else "right")
        for agent, used in agents.items():
            day = used["today"]
            table.add_row(
                agent,
                str(day["calls"]),
                f"{day['tokens']:,}",
                f"${day['cost']:.4f}",
                str(used["calls"]),
                f"{used['tokens']:,}",
                f"${used['cost']:.4f}",
            )
        # plain output (a pipe, a file) is not cut to 80 columns: agent names stay whole
        wide = console if tty else Console(no_color=True, highlight=False, width=1000)
        wide.print("model usage (today: since 00:00 UTC)")
        wide.print(table, markup=False)
