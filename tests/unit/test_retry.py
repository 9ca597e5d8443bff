"""Retry maths (core.retry): capped exponential backoff, jitter, attempt cap, deadline, non-retryable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orlojd.core.manifests.agents import RetryPolicy
from orlojd.core.retry import Failure, GiveUp, backoff_seconds, decide, provider_wait, retry_after_seconds

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def policy(**fields: object) -> RetryPolicy:
    return RetryPolicy.model_validate(
        {"maxAttempts": 5, "backoff": {"initial": "1s", "max": "1m", "multiplier": 2}, "jitter": "none", **fields}
    )


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [backoff_seconds(policy(), attempt, 0.5) for attempt in range(1, 10)]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_full_jitter_scales_the_whole_delay_and_equal_jitter_keeps_half() -> None:
    assert backoff_seconds(policy(jitter="full"), 3, 0.0) == 0
    assert backoff_seconds(policy(jitter="full"), 3, 0.5) == 2
    assert backoff_seconds(policy(jitter="equal"), 3, 0.0) == 2
    assert backoff_seconds(policy(jitter="equal"), 3, 0.999) == pytest.approx(3.998)


def test_default_jitter_is_full() -> None:
    assert RetryPolicy().jitter.value == "full"


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    draw=st.floats(min_value=0, max_value=1),
    jitter=st.sampled_from(["full", "equal", "none"]),
    multiplier=st.floats(min_value=1, max_value=10),
)
def test_a_delay_is_never_negative_and_never_above_the_cap(
    attempt: int, draw: float, jitter: str, multiplier: float
) -> None:
    p = policy(jitter=jitter, backoff={"initial": "2s", "max": "90s", "multiplier": multiplier})
    assert 0 <= backoff_seconds(p, attempt, draw) <= 90


@given(attempts=st.integers(min_value=0, max_value=200), draw=st.floats(min_value=0, max_value=0.999))
def test_attempts_are_always_capped(attempts: int, draw: float) -> None:
    decision = decide(policy(maxAttempts=3), attempts, Failure.RETRYABLE, NOW, None, draw)
    assert decision.retries == (attempts < 3)
    if not decision.retries:
        assert decision.give_up is GiveUp.ATTEMPTS_EXHAUSTED


def test_non_retryable_errors_skip_retries() -> None:
    decision = decide(policy(), 1, Failure.NON_RETRYABLE, NOW, None, 0.5)
    assert not decision.retries and decision.give_up is GiveUp.NON_RETRYABLE


def test_a_retry_after_the_deadline_gives_up() -> None:
    deadline = NOW + timedelta(seconds=3)
    assert decide(policy(), 1, Failure.RETRYABLE, NOW, deadline, 0.5).retry_at == NOW + timedelta(seconds=1)
    late = decide(policy(), 3, Failure.RETRYABLE, NOW, deadline, 0.5)  # would wait 4 s
    assert not late.retries and late.give_up is GiveUp.DEADLINE


def test_retry_at_is_now_plus_the_delay() -> None:
    decision = decide(policy(), 2, Failure.RETRYABLE, NOW, None, 0.5)
    assert decision.retry_at == NOW + timedelta(seconds=2) and decision.delay == timedelta(seconds=2)


# -- provider retries inside one attempt (the agent runtime's model calls) -------------------------------------------


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7", NOW) == 7.0
    assert retry_after_seconds(" 0 ", NOW) == 0.0
    assert retry_after_seconds("Wed, 25 Nov 2026 12:00:30 GMT", NOW) == 30.0
    assert retry_after_seconds("Wed, 25 Nov 2026 11:00:00 GMT", NOW) == 0.0, "a date in the past: no wait"
    for unreadable in (None, "", "soon", "-5", "1.5e3"):
        assert retry_after_seconds(unreadable, NOW) is None


@given(
    attempts=st.integers(1, 6),
    attempt=st.integers(1, 8),
    draw=st.floats(0, 1, exclude_max=True),
    retry_after=st.none() | st.floats(0, 120),
)
def test_provider_wait_is_capped_honours_retry_after_and_stops(
    attempts: int, attempt: int, draw: float, retry_after: float | None
) -> None:
    chosen = policy(maxAttempts=attempts, jitter="full")
    wait = provider_wait(chosen, attempt, draw, retry_after)
    if attempt >= attempts:
        assert wait is None, "attempts are capped"
    elif retry_after is not None and retry_after > 60:
        assert wait is None, "asked to wait longer than backoff.max: move on instead of holding the run"
    else:
        assert wait is not None and 0 <= wait <= 60
        assert wait >= (retry_after or 0), "never sooner than the provider asked"
        assert wait >= backoff_seconds(chosen, attempt, draw)
