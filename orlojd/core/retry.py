"""Retry maths for tasks: capped exponential backoff with jitter, as data.

Pure: ``decide`` takes the manifest's policy, how many attempts ran, what kind of error
ended the last one, ``now``, the task's deadline and a random draw in [0, 1), and
returns a ``RetryDecision`` (retry at a time, or give up with a reason). The worker
pool only obeys. Attempts are always capped: every retried model call costs money.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
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
