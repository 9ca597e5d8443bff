"""MCP tools (``engine/mcp_tools.py``) against real MCP servers started as real processes.

Two fixture servers live in tests/fixtures/mcp: ``loop_server.py``, a tiny JSON-RPC loop that writes
its pid, its environment and every message it receives to a record file the test reads (so "no
process started" and "the key arrived" are read, not assumed), and ``sdk_server.py``, built with the
official SDK, served over stdio and over streamable HTTP on a free 127.0.0.1 port. Waits poll with a
deadline; nothing sleeps to wait.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pools import wait_for

from orlojd.core.desired import load_file
from orlojd.core.diagnostics import Severity
from orlojd.core.manifests.extensions import McpServer
from orlojd.core.manifests.tools import Tool
from orlojd.engine.mcp_tools import McpTool, mcp_tool_of, resolve_mcp_tool, server_env
from orlojd.engine.tool_executors import ToolCall, ToolResult, run_tool

PY = sys.executable
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mcp"
LOOP = str(FIXTURES / "loop_server.py")
SDK = str(FIXTURES / "sdk_server.py")
KEY = "task:t-1/step:3/attempt:2"


def call(arguments: dict[str, Any] | None = None, timeout: float = 10.0) -> ToolCall:
    return ToolCall(tool="t", arguments=arguments or {}, idempotency_key=KEY, timeout=timeout)


def loop_tool(record: Path, tool_name: str = "echo", **kwargs: Any) -> McpTool:
    argv = (PY, LOOP, str(record), *kwargs.pop("extra", ()))
    return McpTool(server="tools/loop", tool_name=tool_name, transport="stdio", argv=argv, **kwargs)


def records(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines() if line.strip()]


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie already handed to init (``Z``/``X``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "record.jsonl"


# --- stdio ---------------------------------------------------------------------------------------


def test_a_call_returns_the_tools_text_and_the_server_is_gone_after(record: Path) -> None:
    result = run_tool(loop_tool(record), call({"message": "hello"}))
    assert result == ToolResult(True, "echo: hello", None, result.duration_ms, len("echo: hello"))
    [started, *_] = records(record)
    with pytest.raises(ProcessLookupError):
        os.kill(started["pid"], 0)  # stopped and reaped: one process per call, none left


def test_the_arguments_and_the_idempotency_key_reach_the_server(record: Path) -> None:
    run_tool(loop_tool(record), call({"message": "hello", "count": 2}))
    seen = records(record)
    [request] = [r for r in seen if r.get("method") == "tools/call"]
    assert request["params"]["name"] == "echo"
    assert request["params"]["arguments"] == {"message": "hello", "count": 2}
    assert request["params"]["_meta"]["idempotencyKey"] == KEY
    assert seen[0]["env"]["ORLOJD_IDEMPOTENCY_KEY"] == KEY
    assert [r["method"] for r in seen[1:] if r.get("method") in ("initialize", "notifications/initialized")] == [
        "initialize",
        "notifications/initialized",
    ]


def test_the_server_sees_only_the_declared_env_plus_path(record: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORLOJD_TEST_LEAK", "from-the-daemon")
    tool = loop_tool(record, env={"WIDGET_REGION": "eu-1", "WIDGET_TOKEN": "s3cret"})
    assert "s3cret" not in repr(tool)  # resolved secrets never show in a repr
    assert run_tool(tool, call({"message": "x"})).ok
    env = dict(records(record)[0]["env"])
    env.pop("LC_CTYPE", None)  # set by the Python interpreter itself at start-up (PEP 538), not passed in
    assert env == {
        "WIDGET_REGION": "eu-1",
        "WIDGET_TOKEN": "s3cret",
        "PATH": os.environ["PATH"],
        "ORLOJD_IDEMPOTENCY_KEY": KEY,
    }


def test_an_is_error_result_is_a_failure_with_its_text(record: Path) -> None:
    result = run_tool(loop_tool(record, "fail"), call())
    assert not result.ok
    assert result.output == "the widget is broken"
    assert result.error == "mcp error: the widget is broken"


def test_an_error_response_to_the_call_is_a_failure_naming_it(record: Path) -> None:
    result = run_tool(loop_tool(record, "nope"), call())
    assert not result.ok
    assert result.error == "mcp error -32602: unknown tool: nope"
    assert "tools/loop" in result.output


def test_a_server_that_hangs_is_a_timeout_and_leaves_no_process_behind(record: Path) -> None:
    result = run_tool(loop_tool(record, "hang"), call(timeout=2.0))
    assert not result.ok
    assert result.error == "timeout"
    assert result.duration_ms < 6000
    seen = records(record)
    pid = seen[0]["pid"]
    [grandchild] = [r["grandchild"] for r in seen if "grandchild" in r]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: not even a zombie
    wait_for(lambda: _gone(grandchild), "the server's own child to be killed with its group")


def test_a_server_that_crashes_at_start_is_a_failure_naming_it(record: Path) -> None:
    result = run_tool(loop_tool(record, extra=("crash",)), call())
    assert not result.ok
    assert result.error == "mcp server tools/loop exited (exit 3)"
    assert "cannot open the widget database" in result.output  # its stderr explains why


def test_a_missing_command_is_a_failure_naming_it() -> None:
    tool = McpTool(server="tools/gone", tool_name="echo", transport="stdio", argv=("/nonexistent/mcp-server",))
    result = run_tool(tool, call())
    assert (result.ok, result.error) == (False, "command not found")
    assert "/nonexistent/mcp-server" in result.output


def test_a_tool_outside_the_filter_is_refused_before_any_process_starts(record: Path) -> None:
    result = run_tool(loop_tool(record, "fail", include=("echo",)), call())
    assert (result.ok, result.error) == (False, "tool not allowed")
    assert "toolFilter.include" in result.output
    assert records(record) == []  # the server never started
    assert run_tool(loop_tool(record, "echo", include=("echo",)), call({"message": "in"})).ok


def test_output_over_the_cap_is_refused(record: Path) -> None:
    result = run_tool(loop_tool(record, "big", max_output_bytes=100), call({"size": 150}))
    assert (result.ok, result.error, result.size) == (False, "output too large", 150)
    assert result.output == "x" * 100
    # a message far beyond the cap is not even read whole
    huge = run_tool(loop_tool(record, "big", max_output_bytes=100), call({"size": 300_000}))
    assert (huge.ok, huge.error) == (False, "output too large")
    assert run_tool(loop_tool(record, "big", max_output_bytes=100), call({"size": 100})).ok


def test_an_sdk_server_over_stdio() -> None:
    tool = McpTool(server="tools/sdk", tool_name="add", transport="stdio", argv=(PY, SDK, "stdio"))
    result = run_tool(tool, call({"a": 17, "b": 25}, timeout=20.0))
    assert (result.ok, result.output) == (True, "17 + 25 = 42")


# --- http ----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def http_server() -> Iterator[str]:
    port = _free_port()
    server = subprocess.Popen(
        [PY, SDK, "http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for(lambda: _listening(port) or server.poll() is not None, "the SDK server to listen")
        assert server.poll() is None, "the SDK server exited at start"
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_an_sdk_server_over_streamable_http(http_server: str) -> None:
    tool = McpTool(server="tools/sdk-http", tool_name="add", transport="http", endpoint=http_server)
    result = run_tool(tool, call({"a": 2, "b": 3}))
    assert (result.ok, result.output) == (True, "2 + 3 = 5")


def test_an_http_server_that_is_not_there_is_a_failure_naming_it() -> None:
    tool = McpTool(
        server="tools/away", tool_name="add", transport="http", endpoint=f"http://127.0.0.1:{_free_port()}/mcp"
    )
    started = time.monotonic()
    result = run_tool(tool, call(timeout=5.0))
    assert not result.ok
    assert result.error is not None and "tools/away" in result.error
    assert time.monotonic() - started < 8


class _Recorder(ThreadingHTTPServer):
    """Answers every request with ``status`` (and ``Location: location``), counting the requests."""

    def __init__(self, status: int, location: str = "") -> None:
        self.status, self.location, self.hits = status, location, 0
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                recorder.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(recorder.status)
                if recorder.location:
                    self.send_header("Location", recorder.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_DELETE = _answer

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/mcp"


@pytest.fixture
def recorders() -> Iterator[list[_Recorder]]:
    started: list[_Recorder] = []
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def _serve(started: list[_Recorder], server: _Recorder) -> _Recorder:
    started.append(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_redirect_to_another_host_is_not_followed(recorders: list[_Recorder]) -> None:
    elsewhere = _serve(recorders, _Recorder(200))
    endpoint = _serve(recorders, _Recorder(307, location=elsewhere.url))
    tool = McpTool(server="tools/moved", tool_name="add", transport="http", endpoint=endpoint.url)
    result = run_tool(tool, call(timeout=5.0))
    assert not result.ok
    assert endpoint.hits >= 1
    assert "not followed" in result.output
    assert elsewhere.hits == 0  # another origin (here another port) is never reached


# --- from the manifests --------------------------------------------------------------------------

MANIFESTS = """\
apiVersion: orloj.dev/v1
kind: McpServer
metadata:
  name: widgets
  namespace: tools
spec:
  transport: stdio
  command: {python}
  args: [{loop}, {record}]
  env:
    - name: WIDGET_REGION
      value: eu-1
    - name: WIDGET_TOKEN
      secretRef: widget-token
  toolFilter:
    include: [echo]
---
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: widgets-echo
  namespace: tools
spec:
  type: mcp
  mcpServerRef: widgets
  mcpToolName: echo
  requires:
    - read: widgets
"""


def _objects(text: str) -> tuple[Tool, McpServer]:
    result = load_file("mcp.yaml", text.encode())
    assert [d.format() for d in result.diagnostics if d.severity is not Severity.WARNING] == []
    [server] = [o.obj for o in result.objects if isinstance(o.obj, McpServer)]
    [tool] = [o.obj for o in result.objects if isinstance(o.obj, Tool)]
    return tool, server


def test_a_tool_of_type_mcp_and_its_server_make_an_mcp_tool_that_runs(record: Path) -> None:
    tool, server = _objects(MANIFESTS.format(python=PY, loop=LOOP, record=record))
    asked: list[str] = []

    def resolve_secret(ref: str) -> str:
        asked.append(ref)
        return "s3cret"

    spec = resolve_mcp_tool(tool, server, resolve_secret)
    assert asked == ["widget-token"]
    assert (spec.server, spec.tool_name, spec.include) == ("tools/widgets", "echo", ("echo",))
    assert spec.argv == (PY, LOOP, str(record))
    assert spec == mcp_tool_of(tool, server, server_env(server, resolve_secret))
    result = run_tool(spec, call({"message": "from git"}))
    assert (result.ok, result.output) == (True, "echo: from git")
    assert records(record)[0]["env"]["WIDGET_TOKEN"] == "s3cret"


def test_a_secret_that_cannot_be_resolved_names_the_server_and_variable(record: Path) -> None:
    tool, server = _objects(MANIFESTS.format(python=PY, loop=LOOP, record=record))

    def resolve_secret(ref: str) -> str:
        raise LookupError(f"no Secret {ref}")

    with pytest.raises(ValueError, match=r"McpServer tools/widgets env WIDGET_TOKEN: Secret 'widget-token'"):
        resolve_mcp_tool(tool, server, resolve_secret)


def test_an_http_server_with_bearer_auth_sends_the_header_to_its_endpoint_only() -> None:
    text = """\
apiVersion: orloj.dev/v1
kind: McpServer
metadata: {name: remote, namespace: tools}
spec:
  transport: http
  endpoint: https://mcp.example.com/mcp
  auth: {secretRef: remote-token}
---
apiVersion: orloj.dev/v1
kind: Tool
metadata: {name: remote-search, namespace: tools}
spec: {type: mcp, mcpServerRef: remote, mcpToolName: search}
"""
    tool, server = _objects(text)
    spec = resolve_mcp_tool(tool, server, lambda ref: "tok-123")
    assert (spec.transport, spec.endpoint) == ("http", "https://mcp.example.com/mcp")
    assert dict(spec.headers) == {"Authorization": "Bearer tok-123"}
    assert "tok-123" not in repr(spec)


def test_a_tool_naming_another_server_is_refused() -> None:
    text = MANIFESTS.format(python=PY, loop=LOOP, record="r").replace("mcpServerRef: widgets", "mcpServerRef: other")
    tool, server = _objects(text)
    with pytest.raises(ValueError, match="mcpServerRef is 'other', not McpServer tools/widgets"):
        mcp_tool_of(tool, server, {})


def test_a_namespaced_server_ref_is_the_same_server(record: Path) -> None:
    text = MANIFESTS.format(python=PY, loop=LOOP, record=record)
    tool, server = _objects(text.replace("mcpServerRef: widgets", "mcpServerRef: tools/widgets"))
    assert mcp_tool_of(tool, server, {}).server == "tools/widgets"
    other, _ = _objects(text.replace("mcpServerRef: widgets", "mcpServerRef: elsewhere/widgets"))
    with pytest.raises(ValueError, match="mcpServerRef is 'elsewhere/widgets'"):
        mcp_tool_of(other, server, {})
