"""The budget ledger (adapters/budgets.py) on real SQLite and PostgreSQL: reserve, settle, windows, atomicity."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from orlojd.adapters.audit import AuditLog
from orlojd.adapters.budgets import BudgetLedger, budget_lock_key
from orlojd.adapters.store import Store, StoreError
from orlojd.core.budgets import BudgetLimits, Limit
from orlojd.core.governance_index import Provenance
from orlojd.core.keys import ResourceKey

T0 = datetime(2025, 3, 4, 12, 0, 0, tzinfo=UTC)
POLICY = ResourceKey("Policy", "default", "budget")
PRICES = {"priced-model": (0.001, 0.002)}  # USD per prompt token, per completion token


def price(model: str, prompt: int, completion: int) -> float | None:
    rates = PRICES.get(model)
    return None if rates is None else prompt * rates[0] + completion * rates[1]


def limit(value: float, field: str) -> Limit:
    return Limit(value, Provenance(POLICY, f"spec.budgets.{field}"))


def limits(**kw: float) -> BudgetLimits:
    names = {
        "per_minute_tokens": "maxTokensPerMinute",
        "per_run_tokens": "maxTokensPerRun",
        "per_day_tokens": "maxTokensPerDay",
        "per_run_cost": "maxCostPerRun",
        "per_day_cost": "maxCostPerDay",
    }
    wait = bool(kw.pop("wait", 0))
    chosen = {k: limit(v, names[k]) for k, v in kw.items()}
    return BudgetLimits(**chosen, on_exceeded="wait" if wait else "fail")  # type: ignore[arg-type]


@pytest.fixture
def ledger(store: Store) -> BudgetLedger:
    return BudgetLedger(store, price=price)


def events(store: Store, name: str | None = None) -> list[str]:
    return [e.event for e in AuditLog(store).list_all() if name is None or e.event == name]


def test_per_minute_refuses_the_call_over_the_limit_and_admits_it_after_the_window(
    ledger: BudgetLedger, store: Store
) -> None:
    lim = limits(per_minute_tokens=1000, wait=1)
    assert ledger.reserve_run("c1", "a", "t1", "m", 600, lim, T0).ok
    assert ledger.reserve_run("c2", "a", "t1", "m", 300, lim, T0 + timedelta(seconds=10)).ok
    refused = ledger.reserve_run("c3", "a", "t1", "m", 200, lim, T0 + timedelta(seconds=30))
    assert not refused.ok
    assert refused.limit == "maxTokensPerMinute"
    assert refused.retry_at == T0 + timedelta(seconds=60)
    assert "Policy/budget" in refused.message and "spec.budgets.maxTokensPerMinute" in refused.message
    # at exactly retry_at the first charge has left the window: 300 + 200 fit
    assert ledger.reserve_run("c3", "a", "t1", "m", 200, lim, refused.retry_at).ok
    usage = ledger.usage_one("a", "t1", T0 + timedelta(seconds=60))
    assert (usage.minute_tokens, usage.run_tokens, usage.day_tokens) == (500, 1100, 1100)
    assert usage.minute_oldest == T0 + timedelta(seconds=10)


def test_other_agents_do_not_share_a_budget(ledger: BudgetLedger) -> None:
    lim = limits(per_minute_tokens=100)
    assert ledger.reserve_run("c1", "a", None, "m", 100, lim, T0).ok
    assert ledger.reserve_run("c2", "b", None, "m", 100, lim, T0).ok
    assert not ledger.reserve_run("c3", "a", None, "m", 1, lim, T0).ok


def test_a_retried_call_is_charged_once(ledger: BudgetLedger) -> None:
    lim = limits(per_run_tokens=1000)
    assert ledger.reserve_run("c1", "a", "t1", "m", 600, lim, T0).ok
    again = ledger.reserve_run("c1", "a", "t1", "m", 600, lim, T0 + timedelta(seconds=1))
    assert again.ok and "retry" in again.message
    assert ledger.usage_one("a", "t1", T0).run_tokens == 600
    assert ledger.settle_run("c1", 500, 200, "m", T0)
    assert not ledger.settle_run("c1", 500, 200, "m", T0), "a second settle changes nothing"
    assert ledger.usage_one("a", "t1", T0).run_tokens == 700


def test_settle_replaces_the_estimate_with_the_reported_usage_and_cost(ledger: BudgetLedger) -> None:
    lim = limits(per_run_cost=10.0)
    verdict = ledger.reserve_run("c1", "a", "t1", "priced-model", 1000, lim, T0)
    assert verdict.ok
    before = ledger.usage_one("a", "t1", T0)
    assert before.run_tokens == 1000 and before.run_cost == pytest.approx(1.0)
    assert ledger.settle_run("c1", 300, 100, "priced-model", T0 + timedelta(seconds=5))
    after = ledger.usage_one("a", "t1", T0 + timedelta(seconds=5))
    assert after.run_tokens == 400 and after.run_cost == pytest.approx(0.5)


def test_settling_an_unknown_call_changes_nothing(ledger: BudgetLedger) -> None:
    assert not ledger.settle_run("never-reserved", 10, 10, "m", T0)
    assert ledger.usage_one("a", None, T0).day_tokens == 0


def test_per_run_limits_never_wait(ledger: BudgetLedger) -> None:
    lim = limits(per_run_tokens=1000, per_run_cost=2.0, wait=1)
    assert ledger.reserve_run("c1", "a", "t1", "priced-model", 900, lim, T0).ok
    refused = ledger.reserve_run("c2", "a", "t1", "priced-model", 200, lim, T0)
    assert not refused.ok and refused.limit == "maxTokensPerRun" and refused.retry_at is None
    assert ledger.reserve_run("c3", "a", "t2", "priced-model", 900, lim, T0).ok, "another run has its own budget"
    over_cost = ledger.reserve_run("c4", "a", "t2", "priced-model", 100, limits(per_run_cost=0.95), T0)
    assert not over_cost.ok and over_cost.limit == "maxCostPerRun"


def test_per_day_limit_waits_until_utc_midnight(ledger: BudgetLedger) -> None:
    lim = limits(per_day_tokens=1000, wait=1)
    assert ledger.reserve_run("c1", "a", "t1", "m", 800, lim, T0).ok
    refused = ledger.reserve_run("c2", "a", "t2", "m", 300, lim, T0 + timedelta(hours=5))
    assert not refused.ok and refused.limit == "maxTokensPerDay"
    assert refused.retry_at == datetime(2025, 3, 5, tzinfo=UTC)
    assert ledger.reserve_run("c2", "a", "t2", "m", 300, lim, refused.retry_at).ok


def test_per_day_cost_limit(ledger: BudgetLedger) -> None:
    lim = limits(per_day_cost=1.5)
    assert ledger.reserve_run("c1", "a", "t1", "priced-model", 1000, lim, T0).ok
    refused = ledger.reserve_run("c2", "a", "t2", "priced-model", 600, lim, T0)
    assert not refused.ok and refused.limit == "maxCostPerDay" and refused.retry_at is None


def test_a_cost_limit_on_an_unpriced_model_fails_closed(ledger: BudgetLedger, store: Store) -> None:
    refused = ledger.reserve_run("c1", "a", "t1", "scripted/echo", 10, limits(per_day_cost=100.0), T0)
    assert not refused.ok and refused.limit == "maxCostPerDay"
    assert "no price for model scripted/echo" in refused.message and "remove the cost limit" in refused.message
    assert events(store) == ["budget_exceeded"]
    assert ledger.reserve_run("c1", "a", "t1", "scripted/echo", 10, limits(per_day_tokens=100), T0).ok
    assert events(store) == ["budget_exceeded", "model_call"]


def test_a_refusal_and_its_audit_event_are_written_together(ledger: BudgetLedger, store: Store) -> None:
    lim = limits(per_minute_tokens=100)
    assert ledger.reserve_run("c1", "a", "t1", "m", 50, lim, T0).ok
    assert events(store) == ["model_call"], "an admission is recorded with its reservation"
    assert not ledger.reserve_run("c2", "a", "t1", "m", 60, lim, T0).ok
    (_, event) = AuditLog(store).list_all()
    assert (event.event, event.verdict, event.reason, event.agent, event.task_id) == (
        "budget_exceeded",
        "deny",
        "budget_exceeded",
        "a",
        "t1",
    )
    assert event.detail["limit"] == "maxTokensPerMinute"
    assert event.detail["where"][0]["field"] == "spec.budgets.maxTokensPerMinute"
    assert event.detail["usage"]["minute_tokens"] == 50 and event.detail["estimate"]["tokens"] == 60
    assert ledger.usage_one("a", "t1", T0).minute_tokens == 50, "a refused call reserves nothing"


def test_an_admission_near_a_limit_writes_a_warning(ledger: BudgetLedger, store: Store) -> None:
    assert ledger.reserve_run("c1", "a", "t1", "m", 85, limits(per_minute_tokens=100), T0).ok
    (event,) = AuditLog(store).list_all()
    assert event.event == "budget_warning" and "maxTokensPerMinute at 85%" in event.detail["warnings"][0]


def test_concurrent_reservations_never_exceed_the_limit(store: Store) -> None:
    ledgers = [BudgetLedger(store, price=price) for _ in range(4)]
    lim = limits(per_minute_tokens=1000, per_run_tokens=10**6)
    admitted: list[int] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(4)

    def worker(n: int) -> None:
        try:
            gate.wait()
            for i in range(15):
                if ledgers[n].reserve_run(f"w{n}-{i}", "shared", f"t{n}", "m", 30, lim, T0).ok:
                    admitted.append(30)
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sum(admitted) == 990, "33 calls of 30 fit under 1000, and no more"
    assert ledgers[0].usage_one("shared", None, T0).minute_tokens == 990
    assert len(events(store, "budget_exceeded")) == 60 - 33


def test_now_must_be_timezone_aware(ledger: BudgetLedger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.usage_one("a", None, datetime(2025, 1, 1))


def test_store_errors_surface_as_store_error(tmp_path: Path) -> None:
    missing = Store(create_engine(f"sqlite:///{tmp_path / 'no-such-folder' / 'state.db'}"), "sqlite:///x")
    with pytest.raises(StoreError, match="reading budget usage"):
        BudgetLedger(missing, price=price).usage_one("a", None, T0)


def test_lock_keys_are_stable_signed_64_bit() -> None:
    key = budget_lock_key("default/agent")
    assert key == budget_lock_key("default/agent") != budget_lock_key("default/other")
    assert -(2**63) <= key < 2**63


def test_litellm_prices_known_models_and_not_offline_ones() -> None:
    from orlojd.adapters.pricing import cost_of, estimate_cost, has_price

    cost = cost_of("gpt-4o-mini", 1000, 500)
    assert cost is not None and cost > 0
    assert estimate_cost("gpt-4o-mini", 1000) == cost_of("gpt-4o-mini", 1000, 0)
    assert cost_of("openai/gpt-4o-mini", 1000, 500) == cost
    assert cost_of("scripted/echo", 1000, 500) is None and estimate_cost("scripted/echo", 10) is None
    assert not has_price("")


def test_the_default_ledger_prices_with_litellm(store: Store) -> None:
    ledger = BudgetLedger(store)
    assert ledger.reserve_run("c1", "a", "t1", "gpt-4o-mini", 1000, limits(per_run_cost=1.0), T0).ok
    assert ledger.usage_one("a", "t1", T0).run_cost > 0
    refused = ledger.reserve_run("c2", "a", "t1", "scripted/echo", 10, limits(per_run_cost=1.0), T0)
    assert not refused.ok and "no price for model scripted/echo" in refused.message
