"""An agent's tokens and cost per UTC day, kept beside its charges, so a budget check reads one row.

Revision ID: 0007
Revises: 0006

* ``budget_usage_days``: one row per (agent, UTC midnight of the day): the tokens and cost of the
  agent's ``budget_charges`` reserved that day (a charge counts at the time it was reserved, also
  once settled: the same rule as the per-day budget, ``adapters/budgets.py``).
* Triggers on ``budget_charges`` keep it equal to the SUM over the charges in the transaction of
  every INSERT, UPDATE (of tokens, cost, agent, at) and DELETE, whichever code path made it, so
  the per-day check no longer sums every charge of the day, and no path can forget the rollup.
  Reservations of one agent are serialized already (SQLite: the write lock; PostgreSQL: the
  agent's advisory lock); the upsert keeps concurrent settlements exact on PostgreSQL too.
* Existing charges are summed into it once, here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# SQLite stores timestamps as naive UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's format):
# the day is its first 10 characters.
SQLITE_DAY = "substr({row}.at, 1, 10) || ' 00:00:00.000000'"
POSTGRES_DAY = "(date_trunc('day', {row}.at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


def _sqlite() -> list[str]:
    def add(row: str) -> str:
        return (
            "INSERT INTO budget_usage_days (agent, day, tokens, cost) VALUES "
            f"({row}.agent, {SQLITE_DAY.format(row=row)}, {row}.tokens, {row}.cost) "
            "ON CONFLICT (agent, day) DO UPDATE SET tokens = tokens + excluded.tokens, cost = cost + excluded.cost;"
        )

    def take(row: str) -> str:
        return (
            f"UPDATE budget_usage_days SET tokens = tokens - {row}.tokens, cost = cost - {row}.cost "
            f"WHERE agent = {row}.agent AND day = {SQLITE_DAY.format(row=row)};"
        )

    return [
        f"CREATE TRIGGER budget_usage_added AFTER INSERT ON budget_charges BEGIN {add('NEW')} END",
        "CREATE TRIGGER budget_usage_changed AFTER UPDATE OF tokens, cost, agent, at ON budget_charges "
        f"BEGIN {take('OLD')} {add('NEW')} END",
        f"CREATE TRIGGER budget_usage_removed AFTER DELETE ON budget_charges BEGIN {take('OLD')} END",
        "INSERT INTO budget_usage_days (agent, day, tokens, cost) "
        f"SELECT agent, {SQLITE_DAY.format(row='budget_charges')}, SUM(tokens), SUM(cost) FROM budget_charges "
        f"GROUP BY agent, {SQLITE_DAY.format(row='budget_charges')}",
    ]


def _postgres() -> list[str]:
    return [
        f"""CREATE FUNCTION orlojd_budget_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE budget_usage_days SET tokens = tokens - OLD.tokens, cost = cost - OLD.cost
        WHERE agent = OLD.agent AND day = {POSTGRES_DAY.format(row="OLD")};
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO budget_usage_days (agent, day, tokens, cost)
        VALUES (NEW.agent, {POSTGRES_DAY.format(row="NEW")}, NEW.tokens, NEW.cost)
        ON CONFLICT (agent, day) DO UPDATE
        SET tokens = budget_usage_days.tokens + EXCLUDED.tokens, cost = budget_usage_days.cost + EXCLUDED.cost;
    END IF;
    RETURN NULL;
END $$""",
        "CREATE TRIGGER budget_usage AFTER INSERT OR DELETE OR UPDATE OF tokens, cost, agent, at ON budget_charges "
        "FOR EACH ROW EXECUTE FUNCTION orlojd_budget_usage()",
        "INSERT INTO budget_usage_days (agent, day, tokens, cost) "
        f"SELECT agent, {POSTGRES_DAY.format(row='budget_charges')}, SUM(tokens), SUM(cost) FROM budget_charges "
        f"GROUP BY agent, {POSTGRES_DAY.format(row='budget_charges')}",
    ]


def upgrade() -> None:
    op.create_table(
        "budget_usage_days",
        sa.Column("agent", sa.String(600), primary_key=True),
        sa.Column("day", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
    )
    for statement in _postgres() if _pg() else _sqlite():
        op.execute(statement)


def downgrade() -> None:
    if _pg():
        op.execute("DROP TRIGGER IF EXISTS budget_usage ON budget_charges")
        op.execute("DROP FUNCTION IF EXISTS orlojd_budget_usage()")
    else:
        for name in ("budget_usage_added", "budget_usage_changed", "budget_usage_removed"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("budget_usage_days")


def _pg() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")
