"""The audit trail records who did what, and every task transition, in the transaction that made it.

Revision ID: 0006
Revises: 0005

* ``governance_events`` (the audit outbox, drained into signed git notes by
  ``engine/audit_outbox.py``) gains ``actor`` (the daemon, a worker id, an approver) and
  ``subject`` (``Kind/namespace/name`` or ``task:<id>``).
* On PostgreSQL every event insert (these triggers, ``adapters/audit.insert``) first takes the
  shared advisory lock ``OUTBOX_LOCK``; the drain takes it exclusively for an instant to learn
  which ids are final (no insert in flight), so an id committed after a higher one is never
  skipped (``AuditLog.drainable_all``).
* Triggers on ``tasks`` write one event per state transition in the transaction of the
  UPDATE/INSERT itself, whichever code path made it (enqueue, claim, finish, retry, reap,
  cancel, park for approval): ``task_queued``, ``task_started`` (a claim or a takeover: a new
  fencing token), ``task_completed``, ``task_retried``, ``task_deferred`` (given back without
  spending its attempt), ``task_waiting_approval``, ``task_resumed``, ``task_failed``,
  ``task_dead_lettered``, ``task_cancelled``. Lease renewals write nothing. A trigger, not
  Python, so the queue's hot path pays one INSERT inside its own transaction and no path can
  forget it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OUTBOX_LOCK = 7_466_017_220_331_418_709  # adapters/audit.py OUTBOX_LOCK: the same number, written out

# (event, condition on OLD -> NEW), checked in this order; the first that holds names the event.
TRANSITIONS = (
    ("task_started", "NEW.state = 'running' AND (OLD.state <> 'running' OR NEW.fencing_token <> OLD.fencing_token)"),
    ("task_completed", "NEW.state = 'succeeded' AND OLD.state <> 'succeeded'"),
    ("task_deferred", "NEW.state = 'pending' AND OLD.state = 'running' AND NEW.attempts < OLD.attempts"),
    ("task_retried", "NEW.state = 'pending' AND OLD.state = 'running'"),
    ("task_resumed", "NEW.state = 'pending' AND OLD.state NOT IN ('pending', 'running')"),
    ("task_waiting_approval", "NEW.state = 'waiting_approval' AND OLD.state <> 'waiting_approval'"),
    ("task_failed", "NEW.state = 'failed' AND OLD.state <> 'failed'"),
    ("task_dead_lettered", "NEW.state = 'dead_letter' AND OLD.state <> 'dead_letter'"),
    ("task_cancelled", "NEW.state = 'cancelled' AND OLD.state <> 'cancelled'"),
)


def _case(transitions: tuple[tuple[str, str], ...]) -> str:
    return "CASE " + " ".join(f"WHEN {cond} THEN '{event}'" for event, cond in transitions) + " END"


def _sqlite() -> list[str]:
    detail = (
        "json_object('task_key', NEW.task_key, 'state', NEW.state, 'attempts', NEW.attempts, "
        "'claim', NEW.fencing_token, 'error', NEW.last_error)"
    )
    actor = "COALESCE(NEW.lease_owner, OLD.lease_owner, 'daemon')"
    return [
        "CREATE TRIGGER audit_task_queued AFTER INSERT ON tasks BEGIN "
        "INSERT INTO governance_events (at, event, task_id, agent, revision, actor, subject, detail) VALUES "
        "(NEW.created_at, 'task_queued', NEW.id, NEW.agent, json_extract(NEW.payload, '$.revision'), 'daemon', "
        f"'task:' || NEW.id, {detail}); END",
        "CREATE TRIGGER audit_task_transition AFTER UPDATE OF state, fencing_token ON tasks "
        f"WHEN ({_case(TRANSITIONS)}) IS NOT NULL BEGIN "
        "INSERT INTO governance_events (at, event, task_id, agent, revision, actor, subject, detail) VALUES "
        f"(NEW.updated_at, {_case(TRANSITIONS)}, NEW.id, NEW.agent, json_extract(NEW.payload, '$.revision'), "
        f"{actor}, 'task:' || NEW.id, {detail}); END",
    ]


def _postgres() -> list[str]:
    detail = (
        "json_build_object('task_key', NEW.task_key, 'state', NEW.state, 'attempts', NEW.attempts, "
        "'claim', NEW.fencing_token, 'error', NEW.last_error)::text"
    )
    return [
        f"""CREATE FUNCTION orlojd_audit_task() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE name text;
BEGIN
    PERFORM pg_advisory_xact_lock_shared({OUTBOX_LOCK});
    IF TG_OP = 'INSERT' THEN
        INSERT INTO governance_events (at, event, task_id, agent, revision, actor, subject, detail)
        VALUES (NEW.created_at, 'task_queued', NEW.id, NEW.agent, NEW.payload::jsonb ->> 'revision', 'daemon',
                'task:' || NEW.id, {detail});
        RETURN NULL;
    END IF;
    name := {_case(TRANSITIONS)};
    IF name IS NOT NULL THEN
        INSERT INTO governance_events (at, event, task_id, agent, revision, actor, subject, detail)
        VALUES (NEW.updated_at, name, NEW.id, NEW.agent, NEW.payload::jsonb ->> 'revision',
                COALESCE(NEW.lease_owner, OLD.lease_owner, 'daemon'), 'task:' || NEW.id, {detail});
    END IF;
    RETURN NULL;
END $$""",
        "CREATE TRIGGER audit_task_queued AFTER INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION orlojd_audit_task()",
        "CREATE TRIGGER audit_task_transition AFTER UPDATE OF state, fencing_token ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION orlojd_audit_task()",
    ]


def upgrade() -> None:
    with op.batch_alter_table("governance_events") as batch:
        batch.add_column(sa.Column("actor", sa.String(200), nullable=True))
        batch.add_column(sa.Column("subject", sa.String(600), nullable=True))

    statements = _postgres() if op.get_bind().dialect.name == "postgresql" else _sqlite()
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_task_transition" + (" ON tasks" if _pg() else ""))
    op.execute("DROP TRIGGER IF EXISTS audit_task_queued" + (" ON tasks" if _pg() else ""))
    if _pg():
        op.execute("DROP FUNCTION IF EXISTS orlojd_audit_task()")
    with op.batch_alter_table("governance_events") as batch:
        batch.drop_column("subject")
        batch.drop_column("actor")


def _pg() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")
