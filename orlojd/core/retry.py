"""Retry maths for tasks and model calls: capped exponential backoff with jitter, as data.

Pure: ``decide`` takes the manifest's policy, how many attempts ran, what kind of error
ended the last one, ``now``, the task's deadline and a random draw in [0, 1), and
returns a ``RetryDecision`` (retry at a time, or give up with a reason). The worker
pool only obeys. Attempts are always capped: every retried model call costs money.
``retry_after_seconds`` reads a provider's ``Retry-After``; ``provider_wait`` is the wait before a
model endpoint is tried again (the agent runtime's retries inside one attempt).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

from orlojd.core.durations import parse_ms
from orlojd.core.manifests.agents import Jitter, RetryPolicy


class Failure(StrEnum):
    """How an attempt ended, as far as retrying is concerned."""

    RETRYABLE = "retryable"
    NON_RETRYABLE = "non_retryable"  # a governance denial, invalid input: trying again cannot help


class GiveUp(StrEnum):
    NON_RETRYABLE = "non_retryable"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    DEADLINE = "deadline"


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry_at: datetime | None
    give_up: GiveUp | None = None
    delay: timedelta = timedelta(0)

    @property
    def retries(self) -> bool:
        return self.retry_at is not None


def backoff_seconds(policy: RetryPolicy, attempt: int, draw: float) -> float:
    """Delay after failed attempt number ``attempt`` (1-based); ``draw`` in [0, 1) drives the jitter."""
    initial = parse_ms(policy.backoff.initial) / 1000
    cap = parse_ms(policy.backoff.max) / 1000
    exponent = min(max(attempt - 1, 0), 64)
    base = min(cap, initial * policy.backoff.multiplier**exponent)
    draw = min(max(draw, 0.0), 1.0)
    if policy.jitter is Jitter.FULL:
        return base * draw
    if policy.jitter is Jitter.EQUAL:
        return base / 2 + base / 2 * draw
    return base


def decide(
    policy: RetryPolicy,
    attempts: int,
    failure: Failure,
    now: datetime,
    deadline: datetime | None,
    draw: float,
) -> RetryDecision:
    """After ``attempts`` attempts, the last ending in ``failure``: when to try again, or why not."""
    if failure is Failure.NON_RETRYABLE:
        return RetryDecision(None, GiveUp.NON_RETRYABLE)
    if attempts >= policy.max_attempts:
        return RetryDecision(None, GiveUp.ATTEMPTS_EXHAUSTED)
    delay = timedelta(seconds=backoff_seconds(policy, attempts, draw))
    retry_at = now + delay
    if deadline is not None and retry_at >= deadline:
        return RetryDecision(None, GiveUp.DEADLINE, delay)
    return RetryDecision(retry_at, None, delay)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header's wait in seconds: delta-seconds or an HTTP date (RFC 9110); None if absent
    or unreadable. A date in the past is 0."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - now).total_seconds(), 0.0)


def provider_wait(policy: RetryPolicy, attempt: int, draw: float, retry_after: float | None) -> float | None:
    """Seconds to wait before trying a model endpoint again after failed attempt ``attempt`` (1-based), or
    None when it should not be tried again: attempts used up, or the provider asks for longer than
    ``backoff.max`` (then the caller moves on to a fallback instead of holding the run). The wait is the
    backoff, and never less than the provider's ``Retry-After``."""
    if attempt >= policy.max_attempts:
        return None
    wait = backoff_seconds(policy, attempt, draw)
    if retry_after is None:
        return wait
    if retry_after > parse_ms(policy.backoff.max) / 1000:
        return None
    return max(wait, retry_after)
