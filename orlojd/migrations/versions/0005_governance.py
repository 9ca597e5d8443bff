"""Governance at run time: audit events, approvals and their votes, token and cost charges.

Revision ID: 0005
Revises: 0004

* ``governance_events``: the audit trail, one row per gate decision, approval step and budget
  event, written in the same transaction as the state change it explains (``adapters/audit.py``).
  Issue 8 turns these into signed git notes.
* ``approvals``: a call waiting for people: the exact call (agent, tool, argument digest, a
  redacted preview), the rules that asked for it (who may approve, how many, signed or not) and
  its state (pending, approved, denied, expired). One per (task run, tool, argument digest).
* ``approval_votes``: one approval or denial per (approval, approver), with its SSH signature.
* ``budget_charges``: one row per model call (``call_id``, so a retried call is charged once):
  reserved on its estimate before the call, settled with the provider's usage after it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "governance_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=True),
        sa.Column("agent", sa.String(600), nullable=True),
        sa.Column("tool", sa.String(253), nullable=True),
        sa.Column("verdict", sa.String(20), nullable=True),
        sa.Column("reason", sa.String(40), nullable=True),
        sa.Column("revision", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_index("ix_governance_events_task", "governance_events", ["task_id"])
    op.create_index("ix_governance_events_at", "governance_events", ["at"])
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("task_id", sa.String(32), nullable=False),
        sa.Column("agent", sa.String(600), nullable=False),
        sa.Column("tool", sa.String(253), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("preview", sa.Text, nullable=False),
        sa.Column("needs", sa.Text, nullable=False),
        sa.Column("because", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("approvers", sa.Text, nullable=False),
        sa.Column("required", sa.Integer, nullable=False),
        sa.Column("signed", sa.Boolean, nullable=False),
        sa.Column("on_deny", sa.String(20), nullable=False),
        sa.Column("requested_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("decided_at", WHEN, nullable=True),
        sa.Column("decision_reason", sa.Text, nullable=True),
        sa.UniqueConstraint("task_id", "tool", "digest", name="uq_approvals_call"),
    )
    op.create_index("ix_approvals_state", "approvals", ["state", "expires_at"])
    op.create_table(
        "approval_votes",
        sa.Column("approval_id", sa.String(32), primary_key=True),
        sa.Column("approver", sa.String(200), primary_key=True),
        sa.Column("verdict", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("signature", sa.Text, nullable=True),
        sa.Column("at", WHEN, nullable=False),
    )
    op.create_table(
        "budget_charges",
        sa.Column("call_id", sa.String(200), primary_key=True),
        sa.Column("agent", sa.String(600), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=True),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("estimate", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("cost", sa.Float, nullable=False, server_default="0"),
        sa.Column("settled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_index("ix_budget_charges_agent_at", "budget_charges", ["agent", "at"])
    op.create_index("ix_budget_charges_task", "budget_charges", ["task_id"])


def downgrade() -> None:
    op.drop_table("budget_charges")
    op.drop_table("approval_votes")
    op.drop_index("ix_approvals_state", "approvals")
    op.drop_table("approvals")
    op.drop_table("governance_events")
