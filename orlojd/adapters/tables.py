"""Store tables (sqlmodel). The schema itself is created by the alembic migrations.

The database is a cache and a queue: everything here can be rebuilt from the
repository. JSON columns hold normalised manifests and conditions as text, so
SQLite and PostgreSQL store them alike.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Integer
from sqlmodel import Field, SQLModel


class InventoryRow(SQLModel, table=True):
    """One applied object: identity, digest, the revision it came from, its normalised body."""

    __tablename__ = "inventory"

    kind: str = Field(primary_key=True, max_length=64)
    namespace: str = Field(primary_key=True, max_length=253)
    name: str = Field(primary_key=True, max_length=253)
    digest: str = Field(max_length=80)
    applied_revision: str = Field(max_length=64)
    generation: int = 1
    body: str
    applied_at: datetime


class ObjectStatusRow(SQLModel, table=True):
    """kstatus-style conditions of one object (Ready, Reconciling, Stalled) as JSON."""

    __tablename__ = "object_status"

    kind: str = Field(primary_key=True, max_length=64)
    namespace: str = Field(primary_key=True, max_length=253)
    name: str = Field(primary_key=True, max_length=253)
    observed_generation: int = 0
    last_applied_revision: str = Field(default="", max_length=64)
    conditions: str = "[]"
    updated_at: datetime


class ReconcileRow(SQLModel, table=True):
    """One apply or reconcile pass; only the newest few are kept."""

    __tablename__ = "reconcile_history"

    id: int | None = Field(default=None, primary_key=True)
    revision: str = Field(max_length=64)
    started_at: datetime
    finished_at: datetime
    result: str = Field(max_length=32)
    summary: str = "{}"


class MetaRow(SQLModel, table=True):
    """Small key/value facts: the applied revision, the inventory fingerprint."""

    __tablename__ = "store_meta"

    key: str = Field(primary_key=True, max_length=64)
    value: str


class SuspensionRow(SQLModel, table=True):
    """An object suspended with `orlojd suspend`: planned and reported, never changed, until resumed."""

    __tablename__ = "suspensions"

    kind: str = Field(primary_key=True, max_length=64)
    namespace: str = Field(primary_key=True, max_length=253)
    name: str = Field(primary_key=True, max_length=253)
    reason: str = ""
    since: datetime


class TaskRow(SQLModel, table=True):
    """One Task run in the queue (see ``adapters/queue.py``); unique per (task_key, digest): run-once.

    ``available_at`` is when the row becomes claimable: for a pending task its first run or
    retry, for a running task the end of its lease. Timestamps are UTC (timestamptz on PostgreSQL).
    """

    __tablename__ = "tasks"

    id: str = Field(primary_key=True, max_length=32)
    task_key: str = Field(max_length=600)
    digest: str = Field(max_length=80)
    state: str = Field(max_length=20)
    priority: int = 3
    attempts: int = 0
    max_attempts: int = 3
    available_at: datetime = Field(sa_type=DateTime(timezone=True))
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    fencing_token: int = Field(default=0, sa_type=BigInteger)
    payload: str = "{}"
    result: str | None = None
    last_error: str | None = None
    created_at: datetime = Field(sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    agent: str | None = Field(default=None, max_length=600)
    agent_cap: int | None = None
    labels: str = "{}"
    deadline_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    attempt_timeout_ms: int | None = Field(default=None, sa_type=BigInteger)
    paused: bool = Field(default=False, sa_type=Boolean)


class WorkerRow(SQLModel, table=True):
    """One worker process (see ``adapters/worker_registry.py``): what it offers and when it last beat."""

    __tablename__ = "workers"

    id: str = Field(primary_key=True, max_length=200)
    hostname: str = Field(max_length=253)
    pid: int
    labels: str = "{}"
    capacity: int
    embedded: bool = Field(sa_type=Boolean)
    started_at: datetime = Field(sa_type=DateTime(timezone=True))
    heartbeat_at: datetime = Field(sa_type=DateTime(timezone=True))
    stopped_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class TaskRequestRow(SQLModel, table=True):
    """A pause or resume applied to a task, by request id: a retried request is recognised."""

    __tablename__ = "task_requests"

    task_id: str = Field(primary_key=True, max_length=32)
    request_id: str = Field(primary_key=True, max_length=100)
    action: str = Field(max_length=20)
    at: datetime = Field(sa_type=DateTime(timezone=True))


class GovernanceEventRow(SQLModel, table=True):
    """One audit event: a gate decision, an approval step or a budget event (``adapters/audit.py``)."""

    __tablename__ = "governance_events"

    id: int | None = Field(default=None, primary_key=True, sa_type=BigInteger().with_variant(Integer, "sqlite"))
    at: datetime = Field(sa_type=DateTime(timezone=True))
    event: str = Field(max_length=40)
    task_id: str | None = Field(default=None, max_length=32)
    agent: str | None = Field(default=None, max_length=600)
    tool: str | None = Field(default=None, max_length=253)
    verdict: str | None = Field(default=None, max_length=20)
    reason: str | None = Field(default=None, max_length=40)
    revision: str | None = Field(default=None, max_length=64)
    detail: str = "{}"
    actor: str | None = Field(default=None, max_length=200)
    subject: str | None = Field(default=None, max_length=600)


class ApprovalRow(SQLModel, table=True):
    """A call waiting for people to approve it (``adapters/approvals.py``)."""

    __tablename__ = "approvals"

    id: str = Field(primary_key=True, max_length=32)
    task_id: str = Field(max_length=32)
    agent: str = Field(max_length=600)
    tool: str = Field(max_length=253)
    digest: str = Field(max_length=80)
    preview: str
    needs: str
    because: str
    state: str = Field(max_length=16)
    requested_by: str = Field(max_length=200)
    approvers: str
    required: int
    signed: bool = Field(sa_type=Boolean)
    on_deny: str = Field(max_length=20)
    requested_at: datetime = Field(sa_type=DateTime(timezone=True))
    expires_at: datetime = Field(sa_type=DateTime(timezone=True))
    decided_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    decision_reason: str | None = None


class ApprovalVoteRow(SQLModel, table=True):
    """One person's approval or denial of one approval request."""

    __tablename__ = "approval_votes"

    approval_id: str = Field(primary_key=True, max_length=32)
    approver: str = Field(primary_key=True, max_length=200)
    verdict: str = Field(max_length=10)
    reason: str | None = None
    signature: str | None = None
    at: datetime = Field(sa_type=DateTime(timezone=True))


class BudgetChargeRow(SQLModel, table=True):
    """One model call's tokens and cost: reserved on the estimate, settled with the reported usage."""

    __tablename__ = "budget_charges"

    call_id: str = Field(primary_key=True, max_length=200)
    agent: str = Field(max_length=600)
    task_id: str | None = Field(default=None, max_length=32)
    at: datetime = Field(sa_type=DateTime(timezone=True))
    estimate: int = Field(sa_type=BigInteger)
    tokens: int = Field(sa_type=BigInteger)
    cost: float = 0.0
    settled: bool = Field(default=False, sa_type=Boolean)
