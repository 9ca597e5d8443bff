"""ModelEndpoint manifests on good and bad input: retry defaults and spellings, timeout, fallbacks, inline scripts.

Documents go through ``validate_object`` as ``orlojd validate`` and apply do; problems name the field.
"""

from __future__ import annotations

from typing import Any

import pytest

from orlojd.core.diagnostics import format_path
from orlojd.core.manifests.registry import validate_object
from orlojd.core.manifests.tools import ModelEndpoint


def endpoint(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "orloj.dev/v1",
        "kind": "ModelEndpoint",
        "metadata": {"name": "primary"},
        "spec": {"provider": "openai", "defaultModel": "gpt-4o-mini", **spec},
    }


def valid(**spec: Any) -> ModelEndpoint:
    checked = validate_object(endpoint(**spec))
    assert isinstance(checked.obj, ModelEndpoint), checked.problems
    return checked.obj


def problems(**spec: Any) -> str:
    checked = validate_object(endpoint(**spec))
    assert checked.obj is None, "expected the manifest to be refused"
    return "\n".join(f"{format_path(p.path)}: {p.message}" for p in checked.problems)


def test_defaults_are_two_minutes_three_attempts_and_backoff_one_to_thirty_seconds() -> None:
    spec = valid().spec
    assert spec.timeout == "120s" and spec.fallbacks == []
    assert (spec.retry.max_attempts, spec.retry.backoff.initial, spec.retry.backoff.max) == (3, "1s", "30s")


@pytest.mark.parametrize(
    ("retry", "initial", "cap"),
    [
        ({"maxAttempts": 5}, "1s", "30s"),  # a partial retry keeps the model default cap, not a task's 5m
        ({"backoff": "2s"}, "2s", "30s"),  # Orloj's string form is the initial delay
        ({"backoff": "1s", "maxBackoff": "10s"}, "1s", "10s"),  # the issue's (and a Tool retry's) spelling
        ({"maxBackoff": "45s"}, "1s", "45s"),
        ({"backoff": {"initial": "10ms", "max": "3s"}}, "10ms", "3s"),
    ],
)
def test_retry_spellings(retry: dict[str, Any], initial: str, cap: str) -> None:
    backoff = valid(retry=retry).spec.retry.backoff
    assert (backoff.initial, backoff.max) == (initial, cap)


def test_bad_retry_and_timeout_name_the_field() -> None:
    assert "give 'maxBackoff' or 'backoff.max', not both" in problems(
        retry={"backoff": {"max": "3s"}, "maxBackoff": "4s"}
    )
    assert "spec.retry.maxAttempts" in problems(retry={"maxAttempts": 0})
    assert "spec.timeout" in problems(timeout="soon")


def test_fallbacks_and_a_compatible_endpoint() -> None:
    spec = valid(provider="OpenAI-Compatible", baseUrl="http://127.0.0.1:8000/v1", fallbacks=["backup"]).spec
    assert (spec.provider, spec.fallbacks) == ("openai-compatible", ["backup"])
    assert "needs 'baseUrl'" in problems(provider="openai-compatible")


def test_an_inline_script_is_checked_when_the_manifest_is_validated() -> None:
    turns = [{"content": "a"}, {"tool_calls": [{"name": "scan", "arguments": {"path": "/q3"}}]}]
    assert valid(provider="scripted", script=turns).spec.script == turns
    bad = [{"content": "a"}, {"tool_calls": [{"name": "scan", "argumentz": {}}]}]
    assert "turn 1: field 'tool_calls[0]': unknown field(s) 'argumentz'" in problems(provider="scripted", script=bad)
    assert "'script' goes with provider 'scripted', not 'openai'" in problems(script=turns)
