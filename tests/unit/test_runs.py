"""``core.runs`` (a Task and its Agent as a queue row) and ``core.task_health`` (task conditions): pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.tasks import MAX_INPUT_BYTES, TaskSpec
from orlojd.core.runs import agent_key, run_parameters
from orlojd.core.task_health import task_conditions

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TASK = ResourceKey("Task", "team", "report")


def task(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "orloj.dev/v1", "kind": "Task", "metadata": {"name": "report"}, "spec": spec}


def agent(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "orloj.dev/v1", "kind": "Agent", "metadata": {"name": "a"}, "spec": spec}


def test_task_and_agent_make_the_row() -> None:
    body = task(
        agent="writer",
        priority=2,
        deadline="1h",
        requirements={"region": "eu", "gpu": True, "labels": {"tier": "gold"}},
    )
    retry = {"maxAttempts": 5, "backoff": {"initial": "2s", "max": "1m", "multiplier": 3}, "jitter": "equal"}
    params = run_parameters(TASK, body, agent(retry=retry, limits={"timeout": "90s", "maxConcurrentRuns": 2}), "abc")
    assert params.payload == {"task": body, "revision": "abc", "retry": retry}
    assert (params.priority, params.max_attempts, params.agent, params.agent_cap) == (2, 5, "Agent/team/writer", 2)
    assert params.labels == {"region": "eu", "gpu": "true", "tier": "gold"}
    assert (params.deadline, params.attempt_timeout) == (timedelta(hours=1), timedelta(seconds=90))
    options = params.enqueue_options(NOW)
    assert options["deadline_at"] == NOW + timedelta(hours=1)
    assert options["attempt_timeout"] == timedelta(seconds=90)


def test_the_task_retry_policy_wins_and_defaults_fill_the_rest() -> None:
    own = {"maxAttempts": 1}
    params = run_parameters(
        TASK, task(agent="ns/other", retry=own), agent(retry={"maxAttempts": 9}), "r", {"slot": "s"}
    )
    assert (params.max_attempts, params.payload["retry"], params.payload["slot"]) == (1, own, "s")
    assert params.agent == "Agent/ns/other"
    bare = run_parameters(TASK, task(system="pipeline"), None, "r")
    assert (bare.agent, bare.agent_cap, bare.labels, bare.deadline, bare.attempt_timeout) == (
        None,
        None,
        {},
        None,
        None,
    )
    assert (bare.priority, bare.max_attempts) == (3, 3)
    assert bare.enqueue_options(NOW)["deadline_at"] is None


def test_agent_key() -> None:
    assert agent_key(TASK, {"agent": "w"}) == ResourceKey("Agent", "team", "w")
    assert agent_key(TASK, {"agent": "other/w"}) == ResourceKey("Agent", "other", "w")
    assert agent_key(TASK, {"system": "s"}) is None


def test_oversized_input_and_bad_labels_are_refused() -> None:
    with pytest.raises(ValueError, match="the limit is 256 KiB"):
        TaskSpec.model_validate({"agent": "a", "input": {"blob": "x" * MAX_INPUT_BYTES}})
    with pytest.raises(ValueError, match="label key 'bad key'"):
        TaskSpec.model_validate({"agent": "a", "requirements": {"labels": {"bad key": "x"}}})
    with pytest.raises(ValueError, match=r"set it with requirements\.region"):
        TaskSpec.model_validate({"agent": "a", "requirements": {"labels": {"region": "x"}}})


def conditions(**overrides: Any) -> list[str]:
    facts: dict[str, Any] = {
        "state": "pending",
        "paused": False,
        "available_at": NOW,
        "labels": {},
        "now": NOW,
        "queue_wait": timedelta(minutes=5),
        "labels_offered": True,
    }
    return [c.type for c in task_conditions(**(facts | overrides))]


def test_task_conditions() -> None:
    assert conditions() == []
    assert conditions(now=NOW + timedelta(minutes=6)) == ["QueueWaitExceeded"]
    assert conditions(labels={"gpu": "true"}, labels_offered=False) == ["Unschedulable"]
    assert conditions(paused=True, now=NOW + timedelta(hours=1)) == ["Paused"], "a paused task is not 'waiting'"
    assert conditions(state="running", now=NOW + timedelta(hours=1)) == []
    assert conditions(state="succeeded", paused=True) == []


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=3_600))
def test_queue_wait_fires_exactly_past_the_threshold(waited: int, threshold: int) -> None:
    found = conditions(now=NOW + timedelta(seconds=waited), queue_wait=timedelta(seconds=threshold))
    assert ("QueueWaitExceeded" in found) == (waited > threshold)
