"""The per-day usage rollup ``budget_usage_days`` (migration 0007) on real SQLite and PostgreSQL.

Triggers keep it equal to the SUM over ``budget_charges`` per agent and UTC day, whatever writes
the charges: the ledger's reservations and settlements, a DELETE, charges that existed before
the migration. The budget check reads the day's usage from it, so a rollup that drifted would
admit calls over ``maxTokensPerDay`` / ``maxCostPerDay``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from orlojd.adapters.budgets import BudgetLedger
from orlojd.adapters.sql import Sql, sqlite_time
from orlojd.adapters.store import SCHEMA_HEAD, Store, stored_time
from orlojd.core.budgets import BudgetLimits, Limit, day_start
from orlojd.core.governance_index import Provenance
from orlojd.core.keys import ResourceKey

# Half an hour before a UTC midnight: reservations fall on both sides of it.
T0 = datetime(2025, 3, 4, 23, 30, 0, tzinfo=UTC)
AGENTS = ("Agent/default/a", "Agent/default/b", "Agent/ops/c")
PRICES = {"priced": (0.001, 0.002)}
Totals = dict[tuple[str, datetime], tuple[int, float]]


def price(model: str, prompt: int, completion: int) -> float | None:
    rates = PRICES.get(model)
    return None if rates is None else prompt * rates[0] + completion * rates[1]


def charges_summed(store: Store) -> Totals:
    """SUM(tokens), SUM(cost) of the charges per (agent, UTC day), computed here from the rows."""
    sums: dict[tuple[str, datetime], list[float]] = defaultdict(lambda: [0, 0.0])
    with store.reading() as connection:
        rows = connection.execute(sa.text("SELECT agent, at, tokens, cost FROM budget_charges")).all()
        for agent, at, tokens, cost in rows:
            moment = stored_time(at)
            assert moment is not None
            total = sums[(agent, day_start(moment))]
            total[0] += tokens
            total[1] += cost
    return {k: (int(v[0]), v[1]) for k, v in sums.items()}


def rollup(store: Store) -> Totals:
    with store.reading() as connection:
        rows = connection.execute(sa.text("SELECT agent, day, tokens, cost FROM budget_usage_days")).all()
    found: Totals = {}
    for agent, day, tokens, cost in rows:
        moment = stored_time(day)
        assert moment is not None
        found[(agent, moment)] = (int(tokens), float(cost))
    return found


def assert_agrees(store: Store) -> None:
    expected = charges_summed(store)
    found = {k: v for k, v in rollup(store).items() if k in expected or v != (0, 0.0)}  # emptied days may stay
    assert found.keys() == expected.keys()
    for key, (tokens, cost) in expected.items():
        assert found[key][0] == tokens, key
        assert found[key][1] == pytest.approx(cost, abs=1e-9), key


def test_the_rollup_equals_the_sum_over_charges_after_random_reservations_and_settlements(store: Store) -> None:
    ledger = BudgetLedger(store, price=price)
    rng = random.Random(20251125)
    where = Provenance(ResourceKey("Policy", "default", "budget"), "spec.budgets.maxTokensPerDay")
    tight = BudgetLimits(per_day_tokens=Limit(40_000, where))
    reserved: list[tuple[str, str]] = []
    for i in range(160):
        now = T0 + timedelta(seconds=rng.randrange(0, 3600))  # both days
        roll = rng.random()
        if roll < 0.55 or not reserved:
            agent = rng.choice(AGENTS)
            call = f"call-{i}"
            limits = tight if rng.random() < 0.5 else BudgetLimits()
            model = rng.choice(("priced", "scripted/demo"))
            if ledger.reserve_run(call, agent, f"task-{i % 7}", model, rng.randrange(0, 3000), limits, now).ok:
                reserved.append((call, model))
        elif roll < 0.9:
            call, model = rng.choice(reserved)  # some settle twice: the second changes nothing
            ledger.settle_run(call, rng.randrange(0, 2000), rng.randrange(0, 500), model, now)
        else:
            call, _ = rng.choice(reserved)
            ledger.reserve_run(call, AGENTS[0], None, "priced", 10, BudgetLimits(), now)  # a retry: no new charge
        if i % 40 == 39:
            assert_agrees(store)
    assert_agrees(store)
    assert len({day for _, day in rollup(store)}) == 2  # the midnight was crossed
    # and the budget check reads it: the day's tokens as a SUM over the day's charges would give them
    summed = charges_summed(store)
    for agent in AGENTS:
        for now in (T0, T0 + timedelta(hours=1)):
            expected = sum(t for (a, day), (t, _) in summed.items() if a == agent and day >= day_start(now))
            assert ledger.usage_one(agent, None, now).day_tokens == expected


def test_deleting_charges_takes_them_out_of_the_rollup(store: Store) -> None:
    ledger = BudgetLedger(store, price=price)
    for i, agent in enumerate(AGENTS):
        assert ledger.reserve_run(f"c{i}", agent, "t", "priced", 100 * (i + 1), BudgetLimits(), T0).ok
    assert ledger.settle_run("c0", 70, 5, "priced", T0)
    with store.writing() as connection:
        connection.execute(sa.text("DELETE FROM budget_charges WHERE agent = :a"), {"a": AGENTS[1]})
    assert_agrees(store)
    assert ledger.usage_one(AGENTS[1], None, T0).day_tokens == 0
    assert ledger.usage_one(AGENTS[0], None, T0).day_tokens == 75


def _upgrade(store: Store, target: str) -> None:
    config = Config()
    with resources.as_file(resources.files("orlojd") / "migrations") as location:
        config.set_main_option("script_location", str(location))
        with store.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, target)


def test_the_migration_sums_the_charges_made_before_it(db_url: str) -> None:
    engine = sa.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://"))
    old = Store(engine, db_url)
    try:
        _upgrade(old, "0006")
        rows = [
            {"call_id": f"c{i}", "agent": AGENTS[i % 2], "task_id": "t", "at": T0 + timedelta(minutes=20 * i),
             "estimate": 10, "tokens": 10 * (i + 1), "cost": 0.25 * i, "settled": i % 2 == 0}
            for i in range(6)
        ]  # fmt: skip
        charges = sa.table(
            "budget_charges",
            *(sa.column(n) for n in ("call_id", "agent", "task_id", "estimate", "tokens", "cost", "settled")),
            sa.column("at", sa.DateTime(timezone=True)),
        )
        with engine.begin() as connection:
            connection.execute(charges.insert(), rows)
        _upgrade(old, "head")
        assert old._version() == SCHEMA_HEAD
        assert_agrees(old)
        assert len(rollup(old)) == 4  # two agents, two days
        ledger = BudgetLedger(old, price=price)
        before = ledger.usage_one(AGENTS[0], None, T0 + timedelta(hours=1)).day_tokens
        assert before == sum(10 * (i + 1) for i in range(6) if i % 2 == 0 and i * 20 >= 30)
        assert ledger.reserve_run("new", AGENTS[0], "t", "priced", 7, BudgetLimits(), T0 + timedelta(hours=1)).ok
        assert ledger.usage_one(AGENTS[0], None, T0 + timedelta(hours=1)).day_tokens == before + 7
        assert_agrees(old)
    finally:
        engine.dispose()


def test_plain_sql_renders_for_both_drivers_and_stores_times_as_sqlalchemy_does() -> None:
    statement = Sql("SELECT a FROM t WHERE x = :agent AND y::text > :at AND z = :agent AND w LIKE 'a%'")
    assert statement.names == ("agent", "at", "agent")
    assert statement.qmark == "SELECT a FROM t WHERE x = ? AND y::text > ? AND z = ? AND w LIKE 'a%'"
    assert statement.pyformat == (
        "SELECT a FROM t WHERE x = %(agent)s AND y::text > %(at)s AND z = %(agent)s AND w LIKE 'a%%'"
    )
    # the ledger writes `at` through the driver, other code through SQLAlchemy: the same text, so they compare alike
    dialect = sqlite_dialect()
    stored = sa.DateTime(timezone=True).dialect_impl(dialect).bind_processor(dialect)
    assert stored is not None
    for moment in (T0, T0.replace(microsecond=1), T0.astimezone(timezone(timedelta(hours=-5)))):
        assert sqlite_time(moment) == stored(moment.astimezone(UTC))
