"""Workers, task routing (labels, per-agent caps), deadlines, pause and control requests.

Revision ID: 0004
Revises: 0003

* ``tasks`` gains: ``agent`` (the agent a run uses, for per-agent caps and the deleted-agent
  check), ``agent_cap`` (the agent's concurrent-run cap, NULL: none), ``labels`` (worker labels
  the run requires, a JSON object, ``{}``: any worker), ``deadline_at`` (whole-task deadline),
  ``attempt_timeout_ms`` (per-attempt timeout) and ``paused``.
* ``workers``: one row per worker process (``orlojd serve``'s embedded pool or ``orlojd worker``):
  labels, capacity, heartbeats; lost after missed heartbeats.
* ``task_requests``: the request id of every pause/resume applied to a task, so a retried
  request is recognised and changes nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("agent", sa.String(600), nullable=True))
        batch.add_column(sa.Column("agent_cap", sa.Integer, nullable=True))
        batch.add_column(sa.Column("labels", sa.Text, nullable=False, server_default="{}"))
        batch.add_column(sa.Column("deadline_at", WHEN, nullable=True))
        batch.add_column(sa.Column("attempt_timeout_ms", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()))
    # The per-agent cap counts an agent's running rows.
    op.create_index("ix_tasks_agent_state", "tasks", ["agent", "state"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("hostname", sa.String(253), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
        sa.Column("embedded", sa.Boolean, nullable=False),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("heartbeat_at", WHEN, nullable=False),
        sa.Column("stopped_at", WHEN, nullable=True),
    )
    op.create_table(
        "task_requests",
        sa.Column("task_id", sa.String(32), primary_key=True),
        sa.Column("request_id", sa.String(100), primary_key=True),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("at", WHEN, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("task_requests")
    op.drop_table("workers")
    op.drop_index("ix_tasks_agent_state", "tasks")
    with op.batch_alter_table("tasks") as batch:
        for column in ("paused", "attempt_timeout_ms", "deadline_at", "labels", "agent_cap", "agent"):
            batch.drop_column(column)
