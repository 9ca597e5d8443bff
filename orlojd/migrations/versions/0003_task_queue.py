"""The task queue: one row per Task run (run-once per task key and manifest digest).

Revision ID: 0003
Revises: 0002

``available_at`` is the moment a row becomes claimable: for a pending task when it may
first run (or retry), for a running task the end of its lease (takeover after expiry).
``ix_tasks_state`` serves SQLite's claim (one lookup per claimable state); PostgreSQL's claim
walks the partial index ``ix_tasks_claim`` in claim order.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATES = ("pending", "running", "waiting_approval", "succeeded", "failed", "dead_letter", "cancelled")


def upgrade() -> None:
    state_list = ", ".join(f"'{s}'" for s in STATES)
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("task_key", sa.String(600), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fencing_token", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"state IN ({state_list})", name="ck_tasks_state"),
        sa.CheckConstraint("priority BETWEEN 1 AND 5", name="ck_tasks_priority"),
        sa.CheckConstraint("max_attempts >= 1", name="ck_tasks_max_attempts"),
    )
    op.create_index("ux_tasks_key_digest", "tasks", ["task_key", "digest"], unique=True)
    # The claim and the listings by state; SQLite claims through it, one state at a time.
    op.create_index("ix_tasks_state", "tasks", ["state", "priority", "available_at"])
    if op.get_bind().dialect.name == "postgresql":
        # PostgreSQL claims through a partial index in claim order (LIMIT 1 ... SKIP LOCKED walks it).
        op.create_index(
            "ix_tasks_claim",
            "tasks",
            ["priority", "available_at"],
            postgresql_where=sa.text("state IN ('pending', 'running')"),
        )


def downgrade() -> None:
    op.drop_table("tasks")
