"""The budget ledger in the state store: reserve a model call's tokens before it, settle them after.

Called by the agent runtime around every model call, shared by every worker through the store
(table ``budget_charges``, migration 0005; one row per ``call_id``):

* ``reserve_run`` before the call, in ONE transaction: lock the agent's budget (SQLite: the
  write lock ``Store.writing`` takes with ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-level
  advisory lock on a stable 64-bit hash of the agent), read its ``Usage``, ``core.budgets.check``
  it, and, if the call fits, insert the reservation (tokens = the estimate, cost = the estimate
  priced as prompt tokens, 0 when unpriced). Two workers never both take the last of a budget.
  A ``call_id`` already in the ledger is a retry of an admitted call: ok, not charged again.
  Every decision is an audit event in the same transaction (``adapters/audit.insert``): a
  refusal ``budget_exceeded``, an admission near a limit ``budget_warning``, any other
  admission ``model_call``.
* ``settle_run`` after the call: the provider's reported usage replaces the estimate, once,
  with a ``model_usage`` event (tokens and cost) in the same transaction.
  A second settle, or a settle of a ``call_id`` never reserved, changes nothing and returns
  False (an unreserved call was never admitted; charging it now would hide that).

Usage of an agent: tokens and cost of its charges made in the last 60 s (``at > now - 60 s``,
the per-minute window), in this run (its charges with this ``task_id``), and since this UTC
day's midnight. A charge counts at the time it was reserved, also once settled. The day's part
is read from ``budget_usage_days`` (migration 0007), which triggers keep equal to the SUM over
the charges in the same transaction: the check reads one row however many calls the day had.
Both writes and the usage read are ``store.Sql`` statements (one round trip each).

Cost limits fail closed: under ``maxCostPerRun`` / ``maxCostPerDay`` a call to a model without
a price in litellm's table is refused (``adapters/pricing.py``). Time is passed in (``now``,
timezone-aware, stored in UTC); nothing here reads the clock. Store errors are ``StoreError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orlojd.adapters.audit import AuditEvent, insert, provenance_json
from orlojd.adapters.clock import utc
from orlojd.adapters.pricing import cost_of
from orlojd.adapters.sql import Sql, execute_one, fetch_all
from orlojd.adapters.store import Store, stored_time
from orlojd.adapters.tables import BudgetChargeRow
from orlojd.core.budgets import WINDOW, BudgetLimits, BudgetVerdict, Usage, check, day_start

__all__ = ["AgentUsage", "BudgetLedger", "Pricing", "TaskUsage", "budget_lock_key"]

CHARGES: sa.Table = BudgetChargeRow.__table__  # type: ignore[attr-defined]
Pricing = Callable[[str, int, int], float | None]  # (model, prompt tokens, completion tokens) -> USD or None


def budget_lock_key(agent: str) -> int:
    """The PostgreSQL advisory lock key of an agent's budget: a stable signed 64-bit hash."""
    digest = hashlib.blake2b(agent.encode(), digest_size=8, person=b"orlojd-budget").digest()
    return int.from_bytes(digest, "big", signed=True)


def _count(value: Any) -> int:
    return int(value or 0)


@dataclass(frozen=True, slots=True)
class TaskUsage:
    """A task's model calls: how many, their tokens and cost (USD), how many still only reserved."""

    calls: int = 0
    tokens: int = 0
    cost: float = 0.0
    unsettled: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"calls": self.calls, "tokens": self.tokens, "cost": self.cost}


@dataclass(frozen=True, slots=True)
class AgentUsage:
    """An agent's model calls: how many, their tokens and cost (USD)."""

    calls: int = 0
    tokens: int = 0
    cost: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"calls": self.calls, "tokens": self.tokens, "cost": self.cost}


_IN_CHUNK = 500  # task ids per query: well under SQLite's bound-parameter limit


class BudgetLedger:
    """Budget charges in one ``Store`` (SQLite or PostgreSQL); safe to share between threads.

    ``price`` prices a call (default: litellm's table); tests pass a fixed table.
    """

    def __init__(self, store: Store, price: Pricing = cost_of) -> None:
        self.store = store
        self.price = price
        self._postgres = store.engine.dialect.name == "postgresql"

    # -- writes ------------------------------------------------------------------------------

    def reserve_run(
        self,
        call_id: str,
        agent: str,
        task_id: str | None,
        model: str,
        estimate_tokens: int,
        limits: BudgetLimits,
        now: datetime,
        *,
        actor: str | None = None,
    ) -> BudgetVerdict:
        """Admit a model call on its estimate and reserve it, or refuse it; atomic across workers. ``actor``: who
        asks (a worker id), for the audit event."""
        now = utc(now)
        if estimate_tokens < 0:
            raise ValueError(f"estimate_tokens must be >= 0, got {estimate_tokens}")
        estimate_cost = self.price(model, estimate_tokens, 0)
        with self.store.writing("reserving a model call's budget") as connection:
            if self._postgres:
                execute_one(connection, AGENT_LOCK, {"k": budget_lock_key(agent)})
            known, usage = _usage(connection, agent, task_id, now, call_id)
            if known:
                return BudgetVerdict(
                    ok=True, message=f"call {call_id} is already reserved (a retry): not charged again"
                )
            if estimate_cost is None and limits.costs:
                verdict = _unpriced(model, limits)
            else:
                verdict = check(limits, usage, estimate_tokens, estimate_cost or 0.0, now)
            if verdict.ok:
                execute_one(
                    connection,
                    INSERT_CHARGE,
                    {
                        "call_id": call_id,
                        "agent": agent,
                        "task_id": task_id,
                        "at": now,
                        "estimate": estimate_tokens,
                        "tokens": estimate_tokens,
                        "cost": estimate_cost or 0.0,
                        "settled": False,
                    },
                )
            event = _event(verdict, call_id, agent, task_id, model, estimate_tokens, estimate_cost, usage, now, actor)
            insert(connection, event)
        return verdict

    def settle_run(
        self,
        call_id: str,
        prompt_tokens: int,
        completion_tokens: int,
        model: str,
        now: datetime,
        *,
        actor: str | None = None,
    ) -> bool:
        """Replace a reservation's estimate with the usage the provider reported; False if there was nothing to settle.

        The charge keeps the time it was reserved at (the windows it counts in). A call with no
        price is charged its tokens and a cost of 0.
        """
        now = utc(now)
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError(f"token counts must be >= 0, got {prompt_tokens} prompt, {completion_tokens} completion")
        cost = self.price(model, prompt_tokens, completion_tokens)
        values = {
            "call_id": call_id,
            "tokens": prompt_tokens + completion_tokens,
            "cost": cost or 0.0,
            "settled_now": True,
            "unsettled": False,
        }
        with self.store.writing("settling a model call's charge") as connection:
            settled = fetch_all(connection, SETTLE, values)  # one UPDATE ... RETURNING: read and settled at once
            if not settled:
                return False
            agent, task_id = settled[0]
            insert(
                connection,
                AuditEvent(
                    event="model_usage",
                    at=now,
                    task_id=task_id,
                    agent=agent,
                    detail={
                        "call_id": call_id,
                        "model": model,
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "cost": cost,
                    },
                    actor=actor,
                ),
            )
            return True

    # -- reads -------------------------------------------------------------------------------

    def usage_one(self, agent: str, task_id: str | None, now: datetime) -> Usage:
        """The agent's usage at ``now``: last 60 s, this run (``task_id``; none: 0), this UTC day."""
        now = utc(now)
        with self.store.reading("reading budget usage") as connection:
            return _usage(connection, agent, task_id, now)[1]

    def usage_by_task_all(self, task_ids: Iterable[str]) -> dict[str, TaskUsage]:
        """Usage of each of ``task_ids`` that has charges (one GROUP BY query per 500 ids); others are absent.

        A reserved but unsettled call counts with its estimate (``unsettled`` says how many).
        """
        ids = sorted(set(task_ids))
        c = CHARGES.c
        found: dict[str, TaskUsage] = {}
        with self.store.reading("reading the tasks' model usage") as connection:
            for start in range(0, len(ids), _IN_CHUNK):
                statement = (
                    sa.select(
                        c.task_id,
                        sa.func.count(),
                        sa.func.coalesce(sa.func.sum(c.tokens), 0),
                        sa.func.coalesce(sa.func.sum(c.cost), 0),
                        sa.func.coalesce(sa.func.sum(sa.case((c.settled == sa.false(), 1), else_=0)), 0),
                    )
                    .where(c.task_id.in_(ids[start : start + _IN_CHUNK]))
                    .group_by(c.task_id)
                )
                for row in connection.execute(statement):
                    found[row[0]] = TaskUsage(
                        calls=_count(row[1]), tokens=_count(row[2]), cost=float(row[3] or 0.0), unsettled=_count(row[4])
                    )
        return found

    def usage_by_agent_all(self, since: datetime | None = None) -> dict[str, AgentUsage]:
        """Usage of each agent with charges reserved at or after ``since`` (None: ever); one GROUP BY query."""
        c = CHARGES.c
        statement = sa.select(
            c.agent,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(c.tokens), 0),
            sa.func.coalesce(sa.func.sum(c.cost), 0),
        ).group_by(c.agent)
        if since is not None:
            statement = statement.where(c.at >= utc(since))
        with self.store.reading("reading the agents' model usage") as connection:
            return {
                row[0]: AgentUsage(calls=_count(row[1]), tokens=_count(row[2]), cost=float(row[3] or 0.0))
                for row in connection.execute(statement.order_by(c.agent))
            }


AGENT_LOCK = Sql("SELECT pg_advisory_xact_lock(:k)")
INSERT_CHARGE = Sql(
    "INSERT INTO budget_charges (call_id, agent, task_id, at, estimate, tokens, cost, settled) "
    "VALUES (:call_id, :agent, :task_id, :at, :estimate, :tokens, :cost, :settled)"
)
SETTLE = Sql(
    "UPDATE budget_charges SET tokens = :tokens, cost = :cost, settled = :settled_now "
    "WHERE call_id = :call_id AND settled = :unsettled RETURNING agent, task_id"
)
# One round trip, four one-row aggregates: is the call known; the agent's last 60 s (an index range
# on (agent, at): only that minute's charges); this run's charges (index on task_id); this UTC day
# from the rollup ``budget_usage_days`` (migration 0007: one row, kept by triggers), not a SUM over
# every charge of the day. ``day >= midnight`` (not ``=``) counts what ``at >= midnight`` counted.
USAGE = Sql(
    "SELECT k.n, m.tokens, m.oldest, r.tokens, r.cost, d.tokens, d.cost FROM "
    "(SELECT COUNT(*) AS n FROM budget_charges WHERE call_id = :call_id) AS k, "
    "(SELECT COALESCE(SUM(tokens), 0) AS tokens, MIN(at) AS oldest FROM budget_charges "
    "WHERE agent = :agent AND at > :minute_from) AS m, "
    "(SELECT COALESCE(SUM(tokens), 0) AS tokens, COALESCE(SUM(cost), 0) AS cost FROM budget_charges "
    "WHERE task_id = :task_id AND agent = :agent) AS r, "
    "(SELECT COALESCE(SUM(tokens), 0) AS tokens, COALESCE(SUM(cost), 0) AS cost FROM budget_usage_days "
    "WHERE agent = :agent AND day >= :midnight) AS d"
)


def _usage(
    connection: Connection, agent: str, task_id: str | None, now: datetime, call_id: str = ""
) -> tuple[bool, Usage]:
    """Whether ``call_id`` is in the ledger already, and the agent's usage at ``now`` (one query)."""
    values = {
        "call_id": call_id,
        "agent": agent,
        "task_id": task_id,
        "minute_from": now - WINDOW,
        "midnight": day_start(now),
    }
    row = fetch_all(connection, USAGE, values)[0]
    usage = Usage(
        minute_tokens=_count(row[1]),
        run_tokens=_count(row[3]),
        day_tokens=_count(row[5]),
        run_cost=float(row[4] or 0.0),
        day_cost=float(row[6] or 0.0),
        minute_oldest=stored_time(row[2]),  # SQLite hands back the stored text of a computed column
    )
    return bool(row[0]), usage


def _unpriced(model: str, limits: BudgetLimits) -> BudgetVerdict:
    name, limit = limits.costs[0]
    return BudgetVerdict(
        ok=False,
        limit=name,
        where=limit.where,
        message=(
            f"no price for model {model} in litellm's price table; {name} (set by {limit.where}) cannot be "
            "enforced; remove the cost limit or use a priced model"
        ),
    )


def _event(
    verdict: BudgetVerdict,
    call_id: str,
    agent: str,
    task_id: str | None,
    model: str,
    estimate_tokens: int,
    estimate_cost: float | None,
    usage: Usage,
    now: datetime,
    actor: str | None = None,
) -> AuditEvent:
    oldest = usage.minute_oldest
    used = {  # as dataclasses.asdict would give it, without its deep copies (a step's hot path)
        "minute_tokens": usage.minute_tokens,
        "run_tokens": usage.run_tokens,
        "day_tokens": usage.day_tokens,
        "run_cost": usage.run_cost,
        "day_cost": usage.day_cost,
        "minute_oldest": None if oldest is None else oldest.isoformat(),
    }
    detail: dict[str, Any] = {
        "call_id": call_id,
        "model": model,
        "usage": used,
        "estimate": {"tokens": estimate_tokens, "cost": estimate_cost},
        "message": verdict.message,
        "warnings": list(verdict.warnings),
    }
    if verdict.ok:
        event, reason = ("budget_warning", "budget_warning") if verdict.warnings else ("model_call", "allowed")
    else:
        event, reason = "budget_exceeded", "budget_exceeded"
        detail |= {
            "limit": verdict.limit,
            "where": provenance_json([verdict.where]) if verdict.where is not None else [],
            "retry_at": verdict.retry_at.isoformat() if verdict.retry_at is not None else None,
        }
    verdict_text = "allow" if verdict.ok else "deny"
    return AuditEvent(
        event=event,
        at=now,
        task_id=task_id,
        agent=agent,
        verdict=verdict_text,
        reason=reason,
        detail=detail,
        actor=actor,
    )
