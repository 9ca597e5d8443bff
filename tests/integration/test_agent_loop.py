"""The agent loop (``engine/agent_loop.py``) end to end: the offline scripted model through litellm, the real
governance gate, a real store, and http tools against a real HTTP server on 127.0.0.1.

Manifests are committed to a git repository and applied with ``apply_revision``; runs are queued with
``run_parameters`` and claimed, as in ``test_gate.py``. The model's replies come from the Task's inline
``spec.input.script_turns``. Nothing sleeps: the slow tool's handler blocks on an event the fixture releases.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from conftest import GitRepo
from manifests import OFFLINE_ENDPOINT
from pools import T0, Clock
from runs import apply_files, claim_run
from servers import serving

from orlojd.adapters import scripted_model
from orlojd.adapters.approvals import Approvals, ApprovalState
from orlojd.adapters.audit import AuditLog
from orlojd.adapters.queue import ClaimedTask, TaskQueue, TaskState
from orlojd.adapters.store import Store
from orlojd.core.keys import ResourceKey
from orlojd.engine.agent_loop import AgentLoop
from orlojd.engine.gate import Gate
from orlojd.engine.workers import TaskFailed, TaskHandedOff

AGENT_KEY = ResourceKey("Agent", "default", "checker")
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


# -- a real HTTP server: /scan answers, /slow blocks until released, /boom is a 500 ----------------------------------


@dataclass
class Server:
    port: int
    seen: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
            state.seen.append((self.path, dict(self.headers), body))
            if self.path == "/slow":
                state.release.wait(10)
            status, text = (500, "boom") if self.path == "/boom" else (200, json.dumps({"found": 3}))
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Handler) as httpd:
        state.port = httpd.server_address[1]
        try:
            yield state
        finally:
            state.release.set()  # a handler still blocked on /slow ends before the server shuts down


# -- manifests --------------------------------------------------------------------------------------------------------


def manifests(port: int, governance: str = "", max_steps: int = 5) -> dict[str, str]:
    base = f"http://127.0.0.1:{port}"
    tool = """\
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: {name}
spec:
  type: {type}
  endpoint: {endpoint}
  description: {name} tool
  inputSchema: {{type: object, properties: {{path: {{type: string}}}}}}
  requires:
    - {access}: {resource}
  runtime:
    timeout: 300ms
"""
    tools = "---\n".join(
        tool.format(name=n, type=t, endpoint=f"{base}{p}", access=a, resource=r)
        for n, t, p, a, r in (
            ("scan-documents", "http", "/scan", "read", "compliance_docs"),
            ("slow-scan", "http", "/slow", "read", "compliance_docs"),
            ("broken-scan", "http", "/boom", "read", "compliance_docs"),
            ("local-scan", "builtin", "/none", "read", "compliance_docs"),
            ("flag-issues", "http", "/flag", "write", "issue_tracker"),
            ("delete-everything", "http", "/delete", "delete", "compliance_docs"),
        )
    )
    grants = "".join(
        f"    - name: {n}\n      permissions:\n        - {a}: {r}\n"
        for n, a, r in (
            ("scan-documents", "read", "compliance_docs"),
            ("slow-scan", "read", "compliance_docs"),
            ("broken-scan", "read", "compliance_docs"),
            ("local-scan", "read", "compliance_docs"),
            ("flag-issues", "write", "issue_tracker"),
        )
    )
    agent = f"""\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: checker
spec:
  modelRef: offline
  prompt: You check compliance documents.
  tools:
{grants}  governance:
    maxTokensPerMinute: 100000
    requireApproval:
      - write: issue_tracker
{governance}  limits:
    maxSteps: {max_steps}
"""
    return {"tools/tools.yaml": tools, "agents/checker.yaml": agent, "models/offline.yaml": OFFLINE_ENDPOINT}


RETURN_TO_MODEL = """\
apiVersion: orloj.dev/v1
kind: Policy
metadata:
  name: tell-the-model
spec:
  selector:
    agents: [checker]
  onDeny: return_to_model
"""


@dataclass
class World:
    repo: GitRepo
    store: Store
    server: Server
    clock: Clock = field(default_factory=lambda: Clock(T0))
    revision: str = ""
    runs: int = 0

    def __post_init__(self) -> None:
        self.queue = TaskQueue(self.store)
        self.gate = Gate(self.store, now=self.clock)
        self.loop = AgentLoop(self.store, self.gate)

    def apply(self, policy: str | None = None, governance: str = "", max_steps: int = 5) -> None:
        files = manifests(self.server.port, governance, max_steps)
        if policy is not None:
            files["policies/policy.yaml"] = policy
        self.revision = apply_files(self.repo, self.store, files, "the checker")

    def started(self, *turns: dict[str, Any]) -> ClaimedTask:
        """A run of the checker whose model answers ``turns``, claimed."""
        self.runs += 1
        task_input = {"quarter": "q3", "script_turns": list(turns)}
        return claim_run(
            self.store, "checker", task_input, f"check-{self.runs}", now=self.clock(), revision=self.revision
        )

    def run(self, claim: ClaimedTask) -> dict[str, Any]:
        return self.loop(claim, threading.Event())

    def events(self, task_id: str) -> list[str]:
        return [e.event for e in AuditLog(self.store).list_all(task_id=task_id) if not e.event.startswith("task_")]

    def state(self, task_id: str) -> TaskState:
        view = self.queue.get_one(task_id)
        assert view is not None
        return view.state


@pytest.fixture
def world(repo: GitRepo, store: Store, server: Server) -> World:
    return World(repo, store, server)


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": tool, "arguments": arguments}]}


SCAN = call("scan-documents", path="reports/q3")
FINAL = {"content": "2 issues found", "usage": {"prompt": 30, "completion": 7}}


# -- tests ------------------------------------------------------------------------------------------------------------


def test_an_allowed_tool_call_runs_and_the_final_answer_is_the_result(world: World) -> None:
    world.apply()
    claim = world.started(SCAN, FINAL)
    result = world.run(claim)
    assert result == {
        "executor": "agent",
        "output": "2 issues found",
        "steps": 2,
        "usage": {"prompt": 40, "completion": 12},
    }
    [(path, headers, body)] = world.server.seen
    assert path == "/scan" and body == {"path": "reports/q3"}
    assert headers["Idempotency-Key"] == f"task:{claim.id}/step:0/attempt:1"
    events = world.events(claim.id)
    assert {"model_call", "decision", "tool_call", "model_usage"} <= set(events)
    assert events.count("model_call") == 2 and events.count("model_usage") == 2
    tool_event = next(e for e in AuditLog(world.store).list_all(task_id=claim.id) if e.event == "tool_call")
    assert tool_event.detail["outcome"] == "ok" and tool_event.tool == "scan-documents"
    assert not [name for name in scripted_model.registered() if name.endswith(claim.id)], "the run's script is gone"


def test_a_denial_returned_to_the_model_is_read_by_it_and_the_tool_never_runs(world: World) -> None:
    world.apply(RETURN_TO_MODEL)
    seen: list[Any] = []
    turns = [call("delete-everything", path="reports"), {"content": "could not delete"}]
    claim = world.started(*turns)
    original = world.loop._complete

    def spy(target: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        seen.append([dict(m) for m in messages])
        return original(target, messages, tools)

    world.loop._complete = spy  # type: ignore[method-assign]
    result = world.run(claim)
    assert result["output"] == "could not delete" and result["steps"] == 2
    tool_message = seen[1][-1]
    assert tool_message["role"] == "tool"
    assert tool_message["content"].startswith("denied: tool_not_granted: ")
    assert world.server.seen == [], "a denied tool never runs"


def test_a_denial_under_fail_run_hands_the_task_off_failed(world: World) -> None:
    world.apply()
    claim = world.started(call("delete-everything"), FINAL)
    with pytest.raises(TaskHandedOff, match="denied"):
        world.run(claim)
    assert world.state(claim.id) is TaskState.FAILED
    assert world.server.seen == []


@sqlite_only
def test_a_tool_that_does_not_exist_is_denied_and_never_executed(world: World) -> None:
    world.apply(RETURN_TO_MODEL)
    claim = world.started(call("no-such-tool", x=1), FINAL)
    assert world.run(claim)["output"] == "2 issues found"
    assert world.server.seen == []
    assert "tool_call" not in world.events(claim.id)


@sqlite_only
def test_a_write_needing_approval_parks_the_task(world: World) -> None:
    world.apply()
    claim = world.started(call("flag-issues", path="page 4"), FINAL)
    with pytest.raises(TaskHandedOff, match="waiting for approval"):
        world.run(claim)
    assert world.state(claim.id) is TaskState.WAITING_APPROVAL
    [approval] = Approvals(world.store).list_all()
    assert approval.task_id == claim.id and approval.tool == "flag-issues"
    assert approval.state is ApprovalState.PENDING
    assert world.server.seen == []


@sqlite_only
def test_a_model_that_keeps_calling_tools_stops_at_max_steps(world: World) -> None:
    world.apply(max_steps=3)
    claim = world.started(SCAN, SCAN, SCAN, SCAN, FINAL)
    with pytest.raises(TaskFailed, match="maxSteps 3 reached") as failed:
        world.run(claim)
    assert failed.value.permanent
    assert len(world.server.seen) == 3
    keys = [headers["Idempotency-Key"] for _, headers, _ in world.server.seen]
    assert keys == [f"task:{claim.id}/step:{n}/attempt:1" for n in range(3)]


@sqlite_only
def test_a_run_over_its_token_budget_fails_for_good(world: World) -> None:
    world.apply(governance="    maxTokensPerRun: 100\n")
    claim = world.started(SCAN, FINAL)
    with pytest.raises(TaskFailed, match="maxTokensPerRun") as failed:
        world.run(claim)
    assert failed.value.permanent
    assert world.server.seen == []


@sqlite_only
def test_a_tool_timeout_and_a_tool_crash_are_told_to_the_model(world: World) -> None:
    world.apply()
    seen: list[list[dict[str, Any]]] = []
    original = world.loop._complete

    def spy(target: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
        seen.append([dict(m) for m in messages])
        return original(target, messages, tools)

    world.loop._complete = spy  # type: ignore[method-assign]
    both = {"tool_calls": [{"name": "slow-scan", "arguments": {}}, {"name": "broken-scan", "arguments": {}}]}
    claim = world.started(both, call("local-scan"), FINAL)
    assert world.run(claim)["output"] == "2 issues found"
    slow, broken = seen[1][-2:]
    assert slow["content"].startswith("error: timeout")
    assert broken["content"].startswith("error: http 500")
    assert seen[2][-1]["content"] == "error: tool local-scan has no executor in this runtime"
    assert sorted(p for p, _, _ in world.server.seen) == ["/boom", "/slow"]
    outcomes = [e.detail["outcome"] for e in AuditLog(world.store).list_all(task_id=claim.id) if e.event == "tool_call"]
    assert sorted(outcomes) == ["error", "error", "error"]
    offered = {t["function"]["name"] for t in _offered(world, claim)}
    assert offered == {"scan-documents", "slow-scan", "broken-scan", "local-scan", "flag-issues"}


@sqlite_only
def test_cancellation_stops_the_run_before_a_model_call(world: World) -> None:
    world.apply()
    claim = world.started(FINAL)
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(TaskFailed, match="cancelled"):
        world.loop(claim, cancelled)
    assert "model_call" not in world.events(claim.id)


def _offered(world: World, claim: ClaimedTask) -> list[dict[str, Any]]:
    from orlojd.engine.agent_loop import _function

    assert claim.agent is not None
    run = world.loop._load(claim, ResourceKey.parse(claim.agent))
    return [_function(name, tool) for name, tool in run.tools.items()]


@sqlite_only
def test_arguments_that_are_not_a_json_object_are_told_to_the_model_and_recorded(world: World) -> None:
    world.apply()
    claim = world.started(FINAL)
    assert claim.agent is not None
    run = world.loop._load(claim, ResourceKey.parse(claim.agent))
    answer = world.loop._tool(claim, run, "0", "scan-documents", "{not json")
    assert answer.startswith("error: the arguments of scan-documents are not a JSON object")
    assert world.loop._tool(claim, run, "0", "scan-documents", "[1, 2]").endswith("(not a JSON object)")
    recorded = [e.detail["outcome"] for e in AuditLog(world.store).list_all(task_id=claim.id) if e.event == "tool_call"]
    assert recorded == ["bad_arguments", "bad_arguments"]
    assert world.server.seen == [] and "decision" not in world.events(claim.id)


@sqlite_only
def test_a_transient_provider_error_is_retryable_and_any_other_is_permanent(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import litellm
    from litellm.exceptions import BadRequestError, RateLimitError

    world.apply()
    world.loop.draw = lambda: 0.0  # full jitter: no wait between the endpoint's attempts
    for error, permanent in (
        (RateLimitError("slow down", llm_provider="scripted", model="demo"), False),
        (BadRequestError("bad request", model="demo", llm_provider="scripted"), True),
    ):

        async def refuse(*, _error: Exception = error, **options: Any) -> Any:
            raise _error

        monkeypatch.setattr(litellm, "acompletion", refuse)
        with pytest.raises(TaskFailed, match=type(error).__name__) as failed:
            world.run(world.started(FINAL))
        assert failed.value.permanent is permanent


def test_a_crash_inside_the_gate_denies_the_call_records_it_and_fails_the_run(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the decision function raises (a bug, a corrupt index) in the middle of a run. The call
    is denied (internal_error) and recorded, the tool never runs, and the run fails even under return_to_model:
    a gate that cannot decide is an incident to surface, not a tool error for the model to route around."""
    import orlojd.engine.gate as gate_module

    def crash(*args: Any) -> Any:
        raise RuntimeError("index corrupted")

    world.apply(RETURN_TO_MODEL)
    claim = world.started(SCAN, FINAL)
    monkeypatch.setattr(gate_module, "decide", crash)
    with pytest.raises(TaskHandedOff, match="index corrupted"):
        world.run(claim)
    assert world.server.seen == [], "a call the gate could not decide never reaches the tool"
    assert world.state(claim.id) is TaskState.FAILED
    [decision] = [e for e in AuditLog(world.store).list_all(task_id=claim.id) if e.event == "decision"]
    assert (decision.verdict, decision.reason, decision.tool) == ("deny", "internal_error", "scan-documents")
    assert "tool_call" not in world.events(claim.id)

    # A crash while admitting a model call: refused for good before the provider is called.
    world.gate._indexed = None
    monkeypatch.setattr(gate_module, "call_policy", crash)
    second = world.started(SCAN, FINAL)
    with pytest.raises(TaskFailed, match="cannot read the applied manifests") as refused:
        world.run(second)
    assert refused.value.permanent and "model_usage" not in world.events(second.id)


@sqlite_only
def test_every_event_of_a_run_names_the_worker_that_made_the_call(world: World) -> None:
    world.apply()
    claim = world.started(SCAN, FINAL)
    world.run(claim)
    actors = {(e.event, e.actor) for e in AuditLog(world.store).list_all(task_id=claim.id) if e.event in CALL_EVENTS}
    assert actors == {(event, "w1") for event in CALL_EVENTS}, (
        "decisions and model calls are the worker's, not the daemon's"
    )


CALL_EVENTS = ("decision", "model_call", "model_usage", "tool_call")
