"""Model calls of the agent loop beyond the happy path: a run's cancellation cuts a provider wait short, a
``Retry-After`` longer than ``backoff.max`` and an unreachable endpoint move on to the fallback, transient
errors on every endpoint leave the task retryable, a provider's error never carries the API key on, and the
offline ``scripted`` provider runs from the ModelEndpoint's own ``script`` (or answers ``done`` without one).

The provider is the real OpenAI-compatible HTTP server of ``test_model_endpoints`` (requests recorded with
their arrival time); manifests are committed to a real git repository and applied to the real store.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest
import test_model_endpoints as shared
from conftest import GitRepo
from pools import DEADLINE, wait_for
from runs import apply_files, claim_run
from test_model_endpoints import AGENT, KEY, SECRET, Provider, endpoint, error, setup

from orlojd.adapters.audit import AuditLog
from orlojd.adapters.store import Store
from orlojd.engine.agent_loop import AgentLoop
from orlojd.engine.gate import Gate
from orlojd.engine.workers import TaskFailed

provider = shared.provider  # fixtures of that module: the provider server, and the key in the Secret's variable
key = shared.key
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

PATIENT = """\
apiVersion: orloj.dev/v1
kind: ModelEndpoint
metadata:
  name: primary
spec:
  provider: openai-compatible
  baseUrl: {base}
  defaultModel: model-a
  auth:
    secretRef: provider-key
  retry:
    maxAttempts: 3
    backoff: {{initial: 10ms, max: 5m}}
    jitter: none
"""


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def in_background(
    loop: AgentLoop, store: Store, cancelled: threading.Event
) -> tuple[threading.Thread, list[BaseException]]:
    """A run of the writer in a thread, started; the thread and the exception the run ended with (once it has)."""
    ended: list[BaseException] = []

    def run() -> None:
        try:
            loop(claim_run(store, "writer"), cancelled)
        except BaseException as exc:
            ended.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, ended


@sqlite_only
def test_cancelling_the_run_cuts_a_retry_after_wait_short(
    repo: GitRepo, store: Store, provider: Provider, key: str
) -> None:
    files = {"agent.yaml": AGENT, "secret.yaml": SECRET, "primary.yaml": PATIENT.format(base=provider.base)}
    apply_files(repo, store, files)
    loop = AgentLoop(store, Gate(store))
    provider.script = [error(429, {"Retry-After": "120"})]
    cancelled = threading.Event()
    thread, ended = in_background(loop, store, cancelled)
    wait_for(lambda: len(provider.seen) == 1, "the rate-limited request")
    started = time.monotonic()
    cancelled.set()
    thread.join(DEADLINE)
    assert not thread.is_alive(), "the run still waits for Retry-After: 120 after being cancelled"
    assert time.monotonic() - started < DEADLINE
    [failure] = ended
    assert isinstance(failure, TaskFailed) and str(failure) == "cancelled"
    assert len(provider.seen) == 1, "nothing was sent after the cancellation"


@sqlite_only
def test_a_retry_after_beyond_max_backoff_moves_on_to_the_fallback_at_once(
    repo: GitRepo, store: Store, provider: Provider, key: str
) -> None:
    loop = setup(repo, store, provider, "  fallbacks: [backup]\n")  # primary: backoff.max 3s
    provider.script = [error(429, {"Retry-After": "600"})]
    claimed = claim_run(store, "writer")
    assert loop(claimed, threading.Event())["output"] == "all clear"
    first, second = provider.seen
    assert [first.body["model"], second.body["model"]] == ["model-a", "model-b"]
    assert second.at - first.at < 3, "the run did not hold on to the rate-limited endpoint"


@sqlite_only
def test_an_unreachable_endpoint_falls_back_and_each_endpoint_is_admitted(
    repo: GitRepo, store: Store, provider: Provider, key: str
) -> None:
    unreachable = endpoint("primary", f"http://127.0.0.1:{closed_port()}/v1", "model-a", "  fallbacks: [backup]\n")
    loop = setup(repo, store, provider)
    apply_files(repo, store, {"primary.yaml": unreachable})
    claimed = claim_run(store, "writer")
    result = loop(claimed, threading.Event())
    assert result["output"] == "all clear"
    assert [s.body["model"] for s in provider.seen] == ["model-b"]
    events = AuditLog(store).list_all(task_id=claimed.id)
    admitted = [(e.detail.get("call_id"), e.detail.get("model")) for e in events if e.event == "model_call"]
    assert admitted == [(f"{claimed.id}/0", "model-a"), (f"{claimed.id}/0~1", "model-b")]
    charged = [e.detail.get("call_id") for e in events if e.event == "model_usage"]
    assert charged == [f"{claimed.id}/0~1"], "the answering endpoint's call is the one charged"


@sqlite_only
def test_transient_errors_on_every_endpoint_leave_the_task_retryable(
    repo: GitRepo, store: Store, provider: Provider, key: str
) -> None:
    loop = setup(repo, store, provider, "  fallbacks: [backup]\n")
    provider.script = [error(503)] * 4
    with pytest.raises(TaskFailed, match="model-b") as failed:
        loop(claim_run(store, "writer"), threading.Event())
    assert not failed.value.permanent, "a provider outage is retried by the task's own retry policy"
    assert [s.body["model"] for s in provider.seen] == ["model-a", "model-a", "model-b", "model-b"]


@sqlite_only
def test_a_provider_error_that_echoes_the_key_does_not_carry_it_on(
    repo: GitRepo, store: Store, provider: Provider, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    loop = setup(repo, store, provider)
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}", "type": "invalid_request_error"}}
    provider.script = [(503, {}, echo), (401, {}, echo)]
    claimed = claim_run(store, "writer")
    with caplog.at_level(logging.DEBUG), pytest.raises(TaskFailed) as refused:
        loop(claimed, threading.Event())
    assert refused.value.permanent and "Incorrect API key provided" in str(refused.value)
    assert KEY not in str(refused.value), "the failure (the task's last_error) names no key"
    assert all(KEY not in r.getMessage() for r in caplog.records), "the retry warning names no key"
    events = AuditLog(store).list_all(task_id=claimed.id)
    assert all(KEY not in json.dumps(e.detail, default=str) for e in events)


# -- the offline scripted provider ------------------------------------------------------------------------------------

SCRIPTED = """\
apiVersion: orloj.dev/v1
kind: ModelEndpoint
metadata:
  name: offline
spec:
  provider: scripted
  defaultModel: {model}
{script}"""
SCRIPTED_AGENT = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: writer
spec:
  modelRef: offline
  prompt: Write.
  tools:
    - name: local-scan
      permissions:
        - read: docs
---
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: local-scan
spec:
  type: builtin
  requires:
    - read: docs
"""
INLINE = """\
  script:
    - content: looking
      tool_calls: [{name: local-scan, arguments: {path: /q3}}]
      usage: {prompt: 20, completion: 5}
    - content: inline answer
      usage: {prompt: 30, completion: 7}
"""


def test_the_model_endpoints_inline_script_drives_the_loop(repo: GitRepo, store: Store) -> None:
    files = {"agent.yaml": SCRIPTED_AGENT, "model.yaml": SCRIPTED.format(model="inline-script-model", script=INLINE)}
    apply_files(repo, store, files)
    claimed = claim_run(store, "writer")
    result = AgentLoop(store, Gate(store))(claimed, threading.Event())
    assert result["output"] == "inline answer" and result["steps"] == 2
    assert result["usage"] == {"prompt": 50, "completion": 12}
    events = AuditLog(store).list_all(task_id=claimed.id)
    assert [(e.tool, e.detail["outcome"]) for e in events if e.event == "tool_call"] == [("local-scan", "error")]


def test_a_scripted_endpoint_without_a_script_answers_done(repo: GitRepo, store: Store) -> None:
    files = {"agent.yaml": SCRIPTED_AGENT, "model.yaml": SCRIPTED.format(model="no-script-anywhere", script="")}
    apply_files(repo, store, files)
    result = AgentLoop(store, Gate(store))(claim_run(store, "writer"), threading.Event())
    assert result["output"] == "done" and result["steps"] == 1


@sqlite_only
def test_cancelling_the_run_abandons_a_model_call_in_flight(
    repo: GitRepo, store: Store, provider: Provider, key: str
) -> None:
    loop = setup(repo, store, provider)  # timeout 5s: a call left to finish would hold the worker that long
    released = threading.Event()
    provider.hold = lambda: released.wait(DEADLINE)
    cancelled = threading.Event()
    thread, ended = in_background(loop, store, cancelled)
    try:
        wait_for(lambda: len(provider.seen) == 1, "the model call to reach the provider")
        cancelled.set()
        thread.join(2)
        assert not thread.is_alive(), "the run still waits for a provider that has not answered"
    finally:
        released.set()
        thread.join(DEADLINE)
    [failure] = ended
    assert isinstance(failure, TaskFailed) and str(failure) == "cancelled"
    assert len(provider.seen) == 1, "an abandoned call is not retried"
