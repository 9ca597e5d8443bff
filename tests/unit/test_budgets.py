"""Token and cost budgets (core.budgets): the effective limits, the check before a call; properties and examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from orlojd.core.budgets import FIELDS, BudgetLimits, Limit, Usage, check, limits_of, next_midnight
from orlojd.core.governance import build_context
from orlojd.core.governance_index import Provenance
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.agents import Agent, AgentGovernance
from orlojd.core.manifests.policies import AgentPolicy, Policy, PolicyBudgets

NOW = datetime(2025, 3, 4, 12, 0, 0, tzinfo=UTC)
AGENT = ResourceKey("Agent", "default", "writer")
WHERE = Provenance(ResourceKey("Policy", "default", "p"), "spec.budgets")

# BudgetLimits attribute -> (Usage attribute, token or cost)
USED = {
    "per_minute_tokens": ("minute_tokens", "tokens"),
    "per_run_tokens": ("run_tokens", "tokens"),
    "per_day_tokens": ("day_tokens", "tokens"),
    "per_run_cost": ("run_cost", "cost"),
    "per_day_cost": ("day_cost", "cost"),
}


def policy_budgets(**kw: Any) -> PolicyBudgets:
    return PolicyBudgets.model_validate(kw)


def policy(name: str, **spec: Any) -> Policy:
    return Policy.model_validate({"kind": "Policy", "metadata": {"name": name}, "spec": spec})


def agent(**governance: Any) -> Agent:
    return Agent.model_validate(
        {"kind": "Agent", "metadata": {"name": "writer"}, "spec": {"model": "gpt-4o", "governance": governance}}
    )


def limit(value: float, name: str) -> Limit:
    return Limit(value, Provenance(WHERE.key, f"spec.budgets.{FIELDS[name]}"))


# -- strategies -----------------------------------------------------------------------------------------------

tokens = st.integers(min_value=0, max_value=10_000)
costs = st.floats(min_value=0, max_value=100, allow_nan=False, allow_infinity=False)


@st.composite
def limits_st(draw: st.DrawFn) -> BudgetLimits:
    chosen: dict[str, Limit | None] = {}
    for name, (_, unit) in USED.items():
        if draw(st.booleans()):
            value = draw(st.integers(1, 10_000)) if unit == "tokens" else draw(st.floats(0.01, 100))
            chosen[name] = limit(value, name)
        else:
            chosen[name] = None
    return BudgetLimits(
        **chosen,
        soft_threshold=draw(st.floats(0.05, 1.0)),
        on_exceeded=draw(st.sampled_from(["fail", "wait"])),
    )


@st.composite
def usage_st(draw: st.DrawFn) -> Usage:
    minute = draw(tokens)
    oldest = NOW - timedelta(seconds=draw(st.floats(0, 59.9))) if minute else None
    return Usage(minute, draw(tokens), draw(tokens), draw(costs), draw(costs), oldest)


def projected(lim: BudgetLimits, usage: Usage, est_tokens: int, est_cost: float) -> dict[str, tuple[float, float]]:
    """For every limit that applies: (usage + estimate, limit)."""
    out: dict[str, tuple[float, float]] = {}
    for name, (used, unit) in USED.items():
        value: Limit | None = getattr(lim, name)
        if value is not None:
            out[FIELDS[name]] = (getattr(usage, used) + (est_tokens if unit == "tokens" else est_cost), value.value)
    return out


# -- check: properties ----------------------------------------------------------------------------------------


@given(limits_st(), usage_st(), tokens, costs)
def test_ok_exactly_when_no_limit_would_be_exceeded(lim: BudgetLimits, usage: Usage, est: int, cost: float) -> None:
    verdict = check(lim, usage, est, cost, NOW)
    exceeded = {name for name, (p, v) in projected(lim, usage, est, cost).items() if p > v}
    assert verdict.ok == (not exceeded)
    if exceeded:
        assert verdict.limit in exceeded and verdict.where is not None and verdict.limit in verdict.message
    else:
        assert verdict.limit is None and verdict.retry_at is None


@given(limits_st(), usage_st(), tokens, costs)
def test_retry_at_only_when_waiting_and_waiting_can_help(
    lim: BudgetLimits, usage: Usage, est: int, cost: float
) -> None:
    verdict = check(lim, usage, est, cost, NOW)
    if lim.on_exceeded == "fail":
        assert verdict.retry_at is None
    if verdict.retry_at is not None:
        assert verdict.retry_at > NOW and not verdict.ok
        assert verdict.limit in ("maxTokensPerMinute", "maxTokensPerDay", "maxCostPerDay")
    if verdict.limit in ("maxTokensPerRun", "maxCostPerRun"):
        assert verdict.retry_at is None, "a run gets no more budget by waiting"


@given(limits_st(), usage_st(), tokens, costs)
def test_a_warning_iff_the_soft_threshold_is_crossed(lim: BudgetLimits, usage: Usage, est: int, cost: float) -> None:
    verdict = check(lim, usage, est, cost, NOW)
    warned = {w.split(" ")[0] for w in verdict.warnings}
    crossing = {n for n, (p, v) in projected(lim, usage, est, cost).items() if lim.soft_threshold * v <= p <= v}
    assert warned == crossing


@given(limits_st(), tokens, costs)
def test_all_well_under_is_ok_without_warnings(lim: BudgetLimits, est: int, cost: float) -> None:
    fresh = Usage()
    small = check(lim, fresh, 0, 0.0, NOW)
    assert small.ok and not small.warnings
    verdict = check(lim, fresh, est, cost, NOW)
    if all(p < lim.soft_threshold * v for p, v in projected(lim, fresh, est, cost).values()):
        assert verdict.ok and not verdict.warnings


# -- limits_of: properties ------------------------------------------------------------------------------------

budget_values = st.fixed_dictionaries(
    {},
    optional={
        "maxTokensPerMinute": st.integers(1, 10_000),
        "maxTokensPerRun": st.integers(1, 10_000),
        "maxTokensPerDay": st.integers(1, 10_000),
        "maxCostPerRun": st.floats(0.01, 100),
        "maxCostPerDay": st.floats(0.01, 100),
        "softThreshold": st.floats(0.05, 1.0),
        "onExceeded": st.sampled_from(["fail", "wait"]),
    },
)


def _as_limit(value: Limit | None) -> float:
    return float("inf") if value is None else value.value


@given(budget_values, st.lists(budget_values, max_size=3), budget_values, st.lists(st.integers(0, 10_000), max_size=2))
def test_adding_a_policy_never_raises_a_limit(
    own: dict[str, Any], policies: list[dict[str, Any]], extra: dict[str, Any], orloj: list[int]
) -> None:
    governance = AgentGovernance.model_validate({k: v for k, v in own.items() if k.startswith("max")})
    sources = [(policy_budgets(**p), WHERE) for p in policies]
    orloj_sources = [(v, Provenance(None, "spec.maxTokensPerRun")) for v in orloj]
    before = limits_of((governance, Provenance(AGENT, "spec.governance")), sources, orloj_sources)
    after = limits_of(
        (governance, Provenance(AGENT, "spec.governance")), [*sources, (policy_budgets(**extra), WHERE)], orloj_sources
    )
    for name in FIELDS:
        assert _as_limit(getattr(after, name)) <= _as_limit(getattr(before, name))
    if policies:  # the first Policy's softThreshold replaces the default 0.8, in either direction
        assert after.soft_threshold <= before.soft_threshold
    limiting_fail = any(p.get("onExceeded", "fail") == "fail" and any(k.startswith("max") for k in p) for p in policies)
    if limiting_fail:
        assert before.on_exceeded == after.on_exceeded == "fail", "a later wait cannot soften a limiting Policy's fail"


# -- limits_of: examples --------------------------------------------------------------------------------------


def test_the_minimum_wins_with_its_provenance() -> None:
    a = agent(maxTokensPerMinute=5000, maxTokensPerRun=800, maxCostPerDay=3.0)
    p = policy("p", budgets={"maxTokensPerMinute": 2000, "maxTokensPerRun": 900, "maxTokensPerDay": 10**5})
    ap = AgentPolicy.model_validate(
        {"kind": "AgentPolicy", "metadata": {"name": "ap"}, "spec": {"applyMode": "global", "maxTokensPerRun": 700}}
    )
    budgets = build_context([a], policies=[p], agent_policies=[ap]).agents[AGENT].budgets
    assert budgets.per_minute_tokens is not None and budgets.per_minute_tokens.value == 2000
    assert str(budgets.per_minute_tokens.where) == "Policy/p:spec.budgets.maxTokensPerMinute"
    assert (
        budgets.per_run_tokens is not None
        and str(budgets.per_run_tokens.where) == "AgentPolicy/ap:spec.maxTokensPerRun"
    )
    assert (
        budgets.per_day_cost is not None
        and str(budgets.per_day_cost.where) == "Agent/writer:spec.governance.maxCostPerDay"
    )
    assert budgets.per_run_cost is None
    assert (budgets.soft_threshold, budgets.on_exceeded) == (0.8, "fail")


def test_a_tie_keeps_the_first_source() -> None:
    a = agent(maxTokensPerDay=100)
    budgets = build_context([a], policies=[policy("p", budgets={"maxTokensPerDay": 100})]).agents[AGENT].budgets
    assert budgets.per_day_tokens is not None and budgets.per_day_tokens.where.key == AGENT


def test_agent_only_limits_fail_by_default() -> None:
    assert build_context([agent(maxTokensPerMinute=10)]).agents[AGENT].budgets.on_exceeded == "fail"


def test_wait_needs_every_limiting_policy_to_agree() -> None:
    waits = policy("w", budgets={"maxTokensPerMinute": 100, "onExceeded": "wait", "softThreshold": 0.5})
    only_wait = policy("o", budgets={"onExceeded": "wait"})
    fails = policy("f", budgets={"maxTokensPerDay": 1000})  # onExceeded defaults to fail
    silent = policy("s", blockedTools=["x"])  # sets no budget: says nothing about them
    a = agent(maxTokensPerMinute=10)

    def mode(*policies: Policy) -> str:
        return build_context([a], policies=list(policies)).agents[AGENT].budgets.on_exceeded

    assert mode(waits) == "wait"
    assert mode(waits, silent) == "wait"
    assert mode(only_wait) == "wait", "a Policy may ask to wait for the agent's own limits"
    assert mode(waits, fails) == "fail"
    assert mode(only_wait, fails) == "fail"
    assert build_context([a], policies=[waits, silent]).agents[AGENT].budgets.soft_threshold == 0.5


def test_token_limit_still_follows_the_per_run_budget() -> None:
    index = build_context([agent(maxTokensPerRun=300)], policies=[policy("p", budgets={"maxTokensPerRun": 200})])
    limit_, where = index.agents[AGENT].token_limit or (0, None)
    assert limit_ == 200 and str(where) == "Policy/p:spec.budgets.maxTokensPerRun"


# -- check: examples ------------------------------------------------------------------------------------------


def test_per_minute_wait_retries_when_the_oldest_charge_leaves_the_window() -> None:
    lim = BudgetLimits(per_minute_tokens=limit(1000, "per_minute_tokens"), on_exceeded="wait")
    oldest = NOW - timedelta(seconds=45)
    verdict = check(lim, Usage(minute_tokens=900, minute_oldest=oldest), 200, 0.0, NOW)
    assert not verdict.ok and verdict.retry_at == oldest + timedelta(seconds=60)
    assert "100 tokens over the limit of 1000 tokens" in verdict.message
    assert "Policy/p:spec.budgets.maxTokensPerMinute" in verdict.message and "onExceeded: wait" in verdict.message


def test_an_estimate_over_the_per_minute_limit_can_never_fit() -> None:
    lim = BudgetLimits(per_minute_tokens=limit(1000, "per_minute_tokens"), on_exceeded="wait")
    verdict = check(lim, Usage(), 1001, 0.0, NOW)
    assert not verdict.ok and verdict.retry_at is None and "this call alone" in verdict.message


def test_per_day_wait_retries_at_utc_midnight() -> None:
    lim = BudgetLimits(per_day_tokens=limit(1000, "per_day_tokens"), on_exceeded="wait")
    verdict = check(lim, Usage(day_tokens=950), 100, 0.0, NOW)
    assert verdict.retry_at == datetime(2025, 3, 5, tzinfo=UTC)


def test_a_limit_waiting_cannot_cure_wins_over_one_it_can() -> None:
    lim = BudgetLimits(
        per_minute_tokens=limit(100, "per_minute_tokens"),
        per_run_tokens=limit(100, "per_run_tokens"),
        on_exceeded="wait",
    )
    verdict = check(lim, Usage(minute_tokens=90, run_tokens=90, minute_oldest=NOW), 20, 0.0, NOW)
    assert (verdict.limit, verdict.retry_at) == ("maxTokensPerRun", None)
    assert "also exceeded: maxTokensPerMinute" in verdict.message and "smaller runs" in verdict.message


def test_fail_says_how_to_wait_instead() -> None:
    lim = BudgetLimits(per_day_cost=limit(2.0, "per_day_cost"))
    verdict = check(lim, Usage(day_cost=1.9), 10, 0.2, NOW)
    assert not verdict.ok and verdict.retry_at is None
    assert "$0.1000 over the limit of $2.0000" in verdict.message and "set onExceeded: wait" in verdict.message


def test_the_warning_names_the_limit_and_percentage() -> None:
    lim = BudgetLimits(per_run_tokens=limit(1000, "per_run_tokens"), soft_threshold=0.75)
    verdict = check(lim, Usage(run_tokens=700), 100, 0.0, NOW)
    assert verdict.ok and verdict.warnings == (
        "maxTokensPerRun at 80% (800 tokens of 1000 tokens, set by Policy/p:spec.budgets.maxTokensPerRun); "
        "the soft threshold is 75%",
    )


def test_next_midnight_is_utc() -> None:
    late = datetime(2025, 3, 4, 23, 30, tzinfo=UTC).astimezone(ZoneInfo("Asia/Tokyo"))
    assert next_midnight(late) == datetime(2025, 3, 5, tzinfo=UTC)
