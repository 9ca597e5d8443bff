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
day's midnight. A charge counts at the time it was reserved, also once settled.

Cost limits fail closed: under ``maxCostPerRun`` / ``maxCostPerDay`` a call to a model without
a price in litellm's table is refused (``adapters/pricing.py``). Time is passed in (``now``,
timezone-aware, stored in UTC); nothing here reads the clock. Store errors are ``StoreError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orlojd.adapters.audit import AuditEvent, insert, provenance_json
from orlojd.adapters.clock import utc
from orlojd.adapters.pricing import cost_of
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
    ) -> BudgetVerdict:
        """Admit a model call on its estimate and reserve it, or refuse it; atomic across workers."""
        now = utc(now)
        if estimate_tokens < 0:
            raise ValueError(f"estimate_tokens must be >= 0, got {estimate_tokens}")
        estimate_cost = self.price(model, estimate_tokens, 0)
        with self.store.writing("reserving a model call's budget") as connection:
            if self._postgres:
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": budget_lock_key(agent)})
            known = connection.execute(sa.select(CHARGES.c.call_id).where(CHARGES.c.call_id == call_id)).first()
            if known is not None:
                return BudgetVerdict(
                    ok=True, message=f"call {call_id} is already reserved (a retry): not charged again"
                )
            usage = _usage(connection, agent, task_id, now)
            if estimate_cost is None and limits.costs:
                verdict = _unpriced(model, limits)
            else:
                verdict = check(limits, usage, estimate_tokens, estimate_cost or 0.0, now)
            if verdict.ok:
                connection.execute(
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
            insert(
                connection, _event(verdict, call_id, agent, task_id, model, estimate_tokens, estimate_cost, usage, now)
            )
        return verdict

    def settle_run(self, call_id: str, prompt_tokens: int, completion_tokens: int, model: str, now: datetime) -> bool:
        """Replace a reservation's estimate with the usage the provider reported; False if there was nothing to settle.

        The charge keeps the time it was reserved at (the windows it counts in). A call with no
        price is charged its tokens and a cost of 0.
        """
        now = utc(now)
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError(f"token counts must be >= 0, got {prompt_tokens} prompt, {completion_tokens} completion")
        cost = self.price(model, prompt_tokens, completion_tokens)
        with self.store.writing("settling a model call's charge") as connection:
            charge = connection.execute(
                sa.select(CHARGES.c.agent, CHARGES.c.task_id).where(
                    CHARGES.c.call_id == call_id, CHARGES.c.settled == sa.false()
                )
            ).first()
            if charge is None:
                return False
            connection.execute(
                CHARGES.update()
                .where(CHARGES.c.call_id == call_id, CHARGES.c.settled == sa.false())
                .values(tokens=prompt_tokens + completion_tokens, cost=cost or 0.0, settled=True)
            )
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "cost": cost}
            insert(
                connection,
                AuditEvent(
                    event="model_usage",
                    at=now,
                    task_id=charge.task_id,
                    agent=charge.agent,
                    detail={"call_id": call_id, "model": model, **usage},
                ),
            )
            return True

    # -- reads -------------------------------------------------------------------------------

    def usage_one(self, agent: str, task_id: str | None, now: datetime) -> Usage:
        """The agent's usage at ``now``: last 60 s, this run (``task_id``; none: 0), this UTC day."""
        now = utc(now)
        with self.store.reading("reading budget usage") as connection:
            return _usage(connection, agent, task_id, now)

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


def _usage_query() -> sa.Select[Any]:
    """The usage query, built once, with bind parameters ``agent``, ``task_id`` (NULL: no run),
    ``minute_from``, ``midnight`` and ``since`` (the earlier of the two)."""
    c = CHARGES.c
    when = sa.DateTime(timezone=True)
    minute_from, midnight = sa.bindparam("minute_from", type_=when), sa.bindparam("midnight", type_=when)
    task_id = sa.bindparam("task_id", type_=sa.String)
    in_minute, in_day = c.at > minute_from, c.at >= midnight
    in_run = sa.and_(task_id.is_not(None), c.task_id == task_id)

    def total(column: Any, condition: Any) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, column), else_=0)), 0)

    return sa.select(
        total(c.tokens, in_minute),
        sa.func.min(sa.case((in_minute, c.at), else_=None)),
        total(c.tokens, in_run),
        total(c.tokens, in_day),
        total(c.cost, in_run),
        total(c.cost, in_day),
    ).where(c.agent == sa.bindparam("agent"), sa.or_(c.at >= sa.bindparam("since", type_=when), in_run))


USAGE = _usage_query()
INSERT_CHARGE = CHARGES.insert()


def _usage(connection: Connection, agent: str, task_id: str | None, now: datetime) -> Usage:
    """One query over the agent's charges since the earlier of (now - 60 s, midnight) or in this run."""
    minute_from, midnight = now - WINDOW, day_start(now)
    values = {
        "agent": agent,
        "task_id": task_id,
        "minute_from": minute_from,
        "midnight": midnight,
        "since": min(minute_from, midnight),
    }
    row = connection.execute(USAGE, values).one()
    oldest = row[1]  # SQLite hands back the stored text of a computed column; stored_time parses it
    return Usage(
        minute_tokens=_count(row[0]),
        run_tokens=_count(row[2]),
        day_tokens=_count(row[3]),
        run_cost=float(row[4] or 0.0),
        day_cost=float(row[5] or 0.0),
        minute_oldest=stored_time(oldest),
    )


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
) -> AuditEvent:
    used = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(usage).items()}
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
        event=event, at=now, task_id=task_id, agent=agent, verdict=verdict_text, reason=reason, detail=detail
    )
