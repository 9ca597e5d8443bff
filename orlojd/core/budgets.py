"""Token and cost budgets: the effective limits of an agent and the check before a model call.

Pure: no I/O, no clock (``now`` is passed in). ``core.governance_index`` builds each agent's
``BudgetLimits`` once (``limits_of``); the ledger (``adapters/budgets.py``) reads the agent's
``Usage`` from the store and calls ``check`` before every model call, inside the transaction
that then reserves the estimate.

Rules:

* Each limit is the minimum over the Agent's ``spec.governance`` and every selected Policy's
  ``spec.budgets`` (per-run tokens also over global AgentPolicies' ``maxTokensPerRun`` > 0),
  with the provenance of the minimum; on a tie the first source wins (agent, policies in
  order, AgentPolicies). Adding a Policy never raises a limit.
* ``soft_threshold`` is the minimum over the selected Policies (0.8 when none; a Policy's
  ``softThreshold`` replaces that default, also with a higher value).
* ``on_exceeded`` is ``wait`` only when some selected Policy says ``onExceeded: wait`` and no
  selected Policy that sets a limit says ``fail`` (``fail`` is the Policy default, so a Policy
  with limits and no ``onExceeded`` makes it fail). Otherwise ``fail``: the strictest reading.
* ``check``: a call is refused when usage + estimate would exceed any limit (equal is fine).
  Waiting helps only the per-minute and per-day windows, and only when the estimate alone fits
  the limit: ``retry_at`` is when the oldest charge leaves the 60 s window (per minute) or the
  next UTC midnight (per day). Per-run limits never wait: a run gets no more budget by waiting.
  When several limits are exceeded the verdict names one that waiting cannot cure, else the
  one that frees up last, so ``retry_at`` is never too early for the limits known now.
* A warning for each limit whose projected use (usage + estimate) is at or above
  ``soft_threshold`` x limit without exceeding it (an exceeded limit is the verdict itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Literal

from orlojd.core.manifests.agents import Budgets
from orlojd.core.manifests.policies import PolicyBudgets

if TYPE_CHECKING:  # governance_index imports this module: the name only, for annotations
    from orlojd.core.governance_index import Provenance

__all__ = ["FIELDS", "BudgetLimits", "BudgetVerdict", "Limit", "OnExceeded", "Usage", "check", "limits_of"]

OnExceeded = Literal["fail", "wait"]
DEFAULT_SOFT_THRESHOLD = 0.8
WINDOW = timedelta(seconds=60)

# BudgetLimits attribute -> the manifest field that sets it (Agent spec.governance, Policy spec.budgets).
FIELDS = {
    "per_minute_tokens": "maxTokensPerMinute",
    "per_run_tokens": "maxTokensPerRun",
    "per_day_tokens": "maxTokensPerDay",
    "per_run_cost": "maxCostPerRun",
    "per_day_cost": "maxCostPerDay",
}
_MODEL_FIELDS = {
    "per_minute_tokens": "max_tokens_per_minute",
    "per_run_tokens": "max_tokens_per_run",
    "per_day_tokens": "max_tokens_per_day",
    "per_run_cost": "max_cost_per_run",
    "per_day_cost": "max_cost_per_day",
}


@dataclass(frozen=True, slots=True)
class Limit:
    """One effective limit and the manifest field that set it."""

    value: float
    where: Provenance


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """An agent's effective budgets; ``None`` is no limit."""

    per_minute_tokens: Limit | None = None
    per_run_tokens: Limit | None = None
    per_day_tokens: Limit | None = None
    per_run_cost: Limit | None = None
    per_day_cost: Limit | None = None
    soft_threshold: float = DEFAULT_SOFT_THRESHOLD
    on_exceeded: OnExceeded = "fail"

    @property
    def limited(self) -> bool:
        """Whether any limit applies."""
        return any(getattr(self, name) is not None for name in FIELDS)

    @property
    def costs(self) -> tuple[tuple[str, Limit], ...]:
        """The cost limits that apply, as (manifest field, limit)."""
        pairs = (("maxCostPerRun", self.per_run_cost), ("maxCostPerDay", self.per_day_cost))
        return tuple((name, limit) for name, limit in pairs if limit is not None)


@dataclass(frozen=True, slots=True)
class Usage:
    """What the agent used so far: tokens in the last 60 s, in this run, this UTC day; cost likewise.

    ``minute_oldest`` is when the oldest charge still inside the 60 s window was made.
    """

    minute_tokens: int = 0
    run_tokens: int = 0
    day_tokens: int = 0
    run_cost: float = 0.0
    day_cost: float = 0.0
    minute_oldest: datetime | None = None


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """May the call go ahead? If not: which limit (manifest field name), set where, and when to retry."""

    ok: bool
    limit: str | None = None
    where: Provenance | None = None
    retry_at: datetime | None = None
    warnings: tuple[str, ...] = ()
    message: str = ""


def _minimum(candidates: Iterable[tuple[float | None, Provenance]]) -> Limit | None:
    best: Limit | None = None
    for value, where in candidates:
        if value is not None and (best is None or value < best.value):
            best = Limit(value, where)
    return best


def limits_of(
    agent: tuple[Budgets, Provenance],
    policies: Sequence[tuple[PolicyBudgets, Provenance]] = (),
    orloj_per_run: Sequence[tuple[int | None, Provenance]] = (),
) -> BudgetLimits:
    """Effective limits from the agent's ``spec.governance`` and the selected Policies' ``spec.budgets``.

    Each source comes with the provenance of its block (``spec.governance``, ``spec.budgets``);
    the field name is appended. ``orloj_per_run``: global AgentPolicies' ``maxTokensPerRun``
    (0 or None is no limit) with the provenance of that field.
    """

    def field_of(where: Provenance, name: str) -> Provenance:
        return dataclasses.replace(where, path=f"{where.path}.{FIELDS[name]}")

    sources: list[tuple[Budgets, Provenance]] = [agent, *policies]
    chosen: dict[str, Limit | None] = {}
    for name, attribute in _MODEL_FIELDS.items():
        candidates: list[tuple[float | None, Provenance]] = [
            (getattr(budgets, attribute), field_of(where, name)) for budgets, where in sources
        ]
        if name == "per_run_tokens":
            candidates += [(value or None, where) for value, where in orloj_per_run]
        chosen[name] = _minimum(candidates)
    threshold = min((b.soft_threshold for b, _ in policies), default=DEFAULT_SOFT_THRESHOLD)
    says_wait = any(b.on_exceeded == "wait" for b, _ in policies)
    limiting_fails = any(
        b.on_exceeded == "fail" and any(getattr(b, a) is not None for a in _MODEL_FIELDS.values()) for b, _ in policies
    )
    return BudgetLimits(
        **chosen, soft_threshold=threshold, on_exceeded="wait" if says_wait and not limiting_fails else "fail"
    )


def next_midnight(now: datetime) -> datetime:
    """The next UTC midnight after ``now``: when the per-day budgets start again."""
    day = now.astimezone(UTC).date() + timedelta(days=1)
    return datetime.combine(day, time(0), tzinfo=UTC)


def day_start(now: datetime) -> datetime:
    """The UTC midnight that began ``now``'s day."""
    return datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Excess:
    name: str
    limit: Limit
    used: float
    projected: float
    retry_at: datetime | None  # None: waiting cannot help
    unit: str


def _amount(value: float, unit: str) -> str:
    return f"{int(value)} tokens" if unit == "tokens" else f"${value:.4f}"


def check(
    limits: BudgetLimits, usage: Usage, estimate_tokens: int, estimate_cost: float, now: datetime
) -> BudgetVerdict:
    """May a call estimated at ``estimate_tokens`` / ``estimate_cost`` go ahead, given ``usage``? (pure)."""
    wait = limits.on_exceeded == "wait"
    window_free = (usage.minute_oldest + WINDOW) if usage.minute_oldest is not None else now + WINDOW
    rows: list[tuple[str, Limit | None, float, float, datetime | None, str]] = [
        ("maxTokensPerRun", limits.per_run_tokens, usage.run_tokens, estimate_tokens, None, "tokens"),
        ("maxCostPerRun", limits.per_run_cost, usage.run_cost, estimate_cost, None, "cost"),
        ("maxTokensPerDay", limits.per_day_tokens, usage.day_tokens, estimate_tokens, next_midnight(now), "tokens"),
        ("maxCostPerDay", limits.per_day_cost, usage.day_cost, estimate_cost, next_midnight(now), "cost"),
        ("maxTokensPerMinute", limits.per_minute_tokens, usage.minute_tokens, estimate_tokens, window_free, "tokens"),
    ]
    excesses: list[_Excess] = []
    warnings: list[str] = []
    for name, limit, used, estimate, frees_at, unit in rows:
        if limit is None:
            continue
        projected = used + estimate
        if projected > limit.value:
            fits_alone = estimate <= limit.value
            retry_at = frees_at if wait and fits_alone else None
            excesses.append(_Excess(name, limit, used, projected, retry_at, unit))
        elif projected >= limits.soft_threshold * limit.value:
            percent = 100 * projected / limit.value
            warnings.append(
                f"{name} at {percent:.0f}% ({_amount(projected, unit)} of {_amount(limit.value, unit)}, "
                f"set by {limit.where}); the soft threshold is {limits.soft_threshold:.0%}"
            )
    if not excesses:
        return BudgetVerdict(ok=True, warnings=tuple(warnings), message="within budget")
    permanent = [e for e in excesses if e.retry_at is None]
    worst = permanent[0] if permanent else max(excesses, key=lambda e: e.retry_at or now)
    return BudgetVerdict(
        ok=False,
        limit=worst.name,
        where=worst.limit.where,
        retry_at=worst.retry_at,
        warnings=tuple(warnings),
        message=_message(worst, excesses, wait, estimate_tokens),
    )


def _message(worst: _Excess, excesses: list[_Excess], wait: bool, estimate_tokens: int) -> str:
    over = worst.projected - worst.limit.value
    text = (
        f"{worst.name} exceeded: {_amount(worst.used, worst.unit)} used + this call's estimate would be "
        f"{_amount(worst.projected, worst.unit)}, {_amount(over, worst.unit)} over the limit of "
        f"{_amount(worst.limit.value, worst.unit)} set by {worst.limit.where}"
    )
    others = [e.name for e in excesses if e is not worst]
    if others:
        text += f" (also exceeded: {', '.join(others)})"
    if worst.retry_at is not None:
        return f"{text}; waiting until {worst.retry_at.isoformat()} as onExceeded: wait says"
    if worst.name.endswith("PerRun"):
        step = "raise the limit or split the task into smaller runs"
    elif worst.projected - worst.used > worst.limit.value:
        step = f"this call alone ({estimate_tokens} tokens estimated) exceeds it: raise the limit or shorten the call"
    else:
        step = "raise the limit, or set onExceeded: wait in the Policy to wait for budget instead of failing"
    return f"{text}; {step}"
