"""ModelEndpoints against a real HTTP server speaking OpenAI's chat completions (the only fake is the provider).

A ``provider: openai-compatible`` endpoint with ``baseUrl`` on 127.0.0.1 goes through litellm's OpenAI client for
real: the key comes from the endpoint's Secret, rate limits and 5xx answers are retried (``Retry-After``
honoured), then fallbacks are tried, each admitted by the gate. The server records every request with its
arrival time; waits are measured from those, nothing in the test sleeps.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from conftest import GitRepo
from manifests import secret
from runs import apply_files, claim_run
from servers import serving

from orlojd.adapters.audit import AuditLog
from orlojd.adapters.model_client import ModelClient, ModelTarget
from orlojd.adapters.store import Store
from orlojd.engine.agent_loop import AgentLoop
from orlojd.engine.gate import Gate
from orlojd.engine.workers import TaskFailed, TaskHandedOff

KEY = "sk-test-4f2a9c"
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@dataclass
class Seen:
    at: float
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


Answer = tuple[int, dict[str, str], dict[str, Any]]


@dataclass
class Provider:
    """Answers each request with the next of ``script`` (status, headers, body); then with a plain reply."""

    script: list[Answer] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    hold: Callable[[], None] = lambda: None
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def reply(text: str = "all clear") -> Answer:
    return (
        200,
        {},
        {
            "id": "r",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
        },
    )


def error(status: int, headers: dict[str, str] | None = None) -> Answer:
    return status, headers or {}, {"error": {"message": f"status {status}", "type": "x", "code": str(status)}}


@pytest.fixture
def provider() -> Iterator[Provider]:
    state = Provider()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            with lock:
                state.seen.append(
                    Seen(time.monotonic(), self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status, headers, answer = state.script.pop(0) if state.script else reply()
            state.hold()
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with serving(Handler) as httpd:
        state.port = httpd.server_address[1]
        yield state


def endpoint(name: str, base: str, model: str, extra: str = "") -> str:
    return f"""\
apiVersion: orloj.dev/v1
kind: ModelEndpoint
metadata:
  name: {name}
spec:
  provider: openai-compatible
  baseUrl: {base}
  defaultModel: {model}
  auth:
    secretRef: provider-key
  timeout: 5s
  retry:
    maxAttempts: 2
    backoff: {{initial: 10ms, max: 3s}}
    jitter: none
{extra}"""


AGENT = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: writer
spec:
  modelRef: primary
  prompt: Write.
"""
SECRET = secret("provider-key", "env: ORLOJD_TEST_PROVIDER_KEY")


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ORLOJD_TEST_PROVIDER_KEY", KEY)
    return KEY


def setup(repo: GitRepo, store: Store, provider: Provider, primary_extra: str = "", more: str = "") -> AgentLoop:
    files = {
        "agent.yaml": AGENT + more,
        "secret.yaml": SECRET,
        "primary.yaml": endpoint("primary", provider.base, "model-a", primary_extra),
        "backup.yaml": endpoint("backup", provider.base, "model-b"),
    }
    apply_files(repo, store, files)
    return AgentLoop(store, Gate(store))


def test_the_key_from_the_secret_and_the_base_url_reach_the_provider(
    repo: GitRepo, store: Store, provider: Provider, key: str
) -> None:
    loop = setup(repo, store, provider)
    claimed = claim_run(store, "writer", {"topic": "q3"})
    assert loop(claimed, threading.Event())["output"] == "all clear"
    [request] = provider.seen
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {key}"
    assert request.body["model"] == "model-a" and "tools" not in request.body
    events = AuditLog(store).list_all(task_id=claimed.id)
    assert all(key not in json.dumps(e.detail) for e in events), "the key never reaches the audit trail"
    assert [e.event for e in events if e.event.startswith("model_")] == ["model_call", "model_usage"]


@sqlite_only
def test_a_rate_limit_waits_for_retry_after_then_succeeds_charged_once(
    repo: GitRepo, store: Store, provider: Provider, key: str
) -> None:
    loop = setup(repo, store, provider)
    provider.script = [error(429, {"Retry-After": "1"}), reply("after the wait")]
    claimed = claim_run(store, "writer")
    assert loop(claimed, threading.Event())["output"] == "after the wait"
    first, second = provider.seen
    assert second.at - first.at >= 1.0, "Retry-After: 1 was honoured"
    admitted = [e for e in AuditLog(store).list_all(task_id=claimed.id) if e.event == "model_call"]
    assert len(admitted) == 1, "a retry of the same endpoint is the same call: reserved and charged once"


@sqlite_only
def test_5xx_is_retried_then_the_fallback_answers(repo: GitRepo, store: Store, provider: Provider, key: str) -> None:
    loop = setup(repo, store, provider, "  fallbacks: [backup]\n")
    provider.script = [error(503), error(500)]
    claimed = claim_run(store, "writer")
    assert loop(claimed, threading.Event())["output"] == "all clear"
    assert [s.body["model"] for s in provider.seen] == ["model-a", "model-a", "model-b"]
    admitted = [e.detail.get("model") for e in AuditLog(store).list_all(task_id=claimed.id) if e.event == "model_call"]
    assert admitted == ["model-a", "model-b"], "each endpoint's call is admitted by the gate"


@sqlite_only
def test_a_fallback_whose_model_a_policy_does_not_allow_is_denied(
    repo: GitRepo, store: Store, provider: Provider, key: str
) -> None:
    only_a = (
        "---\napiVersion: orloj.dev/v1\nkind: Policy\nmetadata:\n  name: models\nspec:\n  allowedModels: [model-a]\n"
    )
    loop = setup(repo, store, provider, "  fallbacks: [backup]\n", only_a)
    provider.script = [error(503), error(503)]
    claimed = claim_run(store, "writer")
    with pytest.raises(TaskHandedOff, match="model model-b is not allowed"):
        loop(claimed, threading.Event())
    assert [s.body["model"] for s in provider.seen] == ["model-a", "model-a"], "model-b was never called"


@sqlite_only
def test_permanent_errors_timeouts_and_a_missing_key(
    repo: GitRepo, store: Store, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = setup(repo, store, provider, "  fallbacks: [backup]\n")
    with pytest.raises(TaskFailed, match="environment variable ORLOJD_TEST_PROVIDER_KEY is not set") as unset:
        loop(claim_run(store, "writer", name="no-key"), threading.Event())
    assert unset.value.permanent and provider.seen == []

    monkeypatch.setenv("ORLOJD_TEST_PROVIDER_KEY", KEY)
    provider.script = [error(401)]
    with pytest.raises(TaskFailed, match="AuthenticationError") as refused:
        loop(claim_run(store, "writer", name="bad-key"), threading.Event())
    assert refused.value.permanent and len(provider.seen) == 1, "a 401 is not retried and no fallback is tried"

    released = threading.Event()
    provider.hold = lambda: released.wait(10)
    target = ModelTarget("default/slow", "model-a", "openai/model-a", timeout=0.5, api_base=provider.base, api_key=KEY)
    try:
        with pytest.raises(Exception, match="Timeout") as slow:
            ModelClient().complete(target, [{"role": "user", "content": "hi"}], [])
        assert getattr(slow.value, "transient", False)
    finally:
        released.set()


def test_calls_from_two_worker_threads_run_at_the_same_time(provider: Provider) -> None:
    both_in = threading.Barrier(2, timeout=10)
    provider.hold = both_in.wait  # each answer waits until the other request arrived: serialised calls would break it
    client = ModelClient()
    target = ModelTarget("default/p", "model-a", "openai/model-a", timeout=15, api_base=provider.base, api_key=KEY)
    answers: list[Any] = []

    def one() -> None:
        answers.append(client.complete(target, [{"role": "user", "content": "hi"}], []))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(answers) == 2 and not both_in.broken
