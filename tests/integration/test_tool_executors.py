"""The tool executors (``engine/tool_executors.py``) against real targets: a local HTTP server, real
processes and a Python module written to a temporary directory.

The HTTP targets are ``http.server`` instances on 127.0.0.1 (free ports) that record every request,
so "refused before any request" is counted, not assumed. Slow targets block on an event the test
releases at teardown (server side); nothing in the tests sleeps to wait, the one wait polls with a
deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orlojd.core.tool_templates import needs_of
from orlojd.engine.tool_executors import (
    CommandTool,
    HttpTool,
    PythonTool,
    ToolCall,
    ToolResult,
    run_tool,
)

KEY = "task:t-1/step:3/attempt:2"
DEADLINE = 10.0


def call(arguments: dict[str, Any] | None = None, timeout: float = 5.0) -> ToolCall:
    return ToolCall(tool="t", arguments=arguments or {}, idempotency_key=KEY, timeout=timeout)


# --- the HTTP target -----------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Target:
    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    redirect_to: str = ""

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def base(self) -> str:
        return f"http://{self.host}"


def _handler(target: Target) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            target.seen.append(Seen(self.command, self.path, dict(self.headers.items()), body))
            if self.path.startswith("/slow"):
                target.release.wait(DEADLINE)
                self._send(200, b"late")
            elif self.path.startswith("/redirect"):
                self.send_response(302)
                self.send_header("Location", target.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path.startswith("/big-stream"):
                self.send_response(200)  # no Content-Length: the body ends when the connection closes
                self.end_headers()
                for _ in range(20):
                    self.wfile.write(b"y" * 100)
            elif self.path.startswith("/big"):
                self._send(200, b"x" * 2000)
            elif self.path.startswith("/down"):
                self._send(503, b"down for maintenance")
            else:
                echo = {
                    "method": self.command,
                    "path": self.path,
                    "key": self.headers.get("Idempotency-Key"),
                    "json": json.loads(body) if body else None,
                }
                self._send(200, json.dumps(echo).encode())

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up on purpose (timeout, cap) is not news


@pytest.fixture
def targets() -> Iterator[list[Target]]:
    """Two recording servers (the second is "another host": another host:port)."""
    started: list[Target] = []
    threads: list[threading.Thread] = []
    for _ in range(2):
        server = _QuietServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        target = Target(server)
        server.RequestHandlerClass = _handler(target)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        thread.start()
        started.append(target)
        threads.append(thread)
    started[0].redirect_to = f"{started[1].base}/stolen"
    yield started
    for target, thread in zip(started, threads, strict=True):
        target.release.set()
        target.server.shutdown()
        target.server.server_close()
        thread.join(DEADLINE)


@pytest.fixture
def target(targets: list[Target]) -> Target:
    return targets[0]


def test_get_renders_and_quotes_the_url_and_sends_the_idempotency_key(target: Target) -> None:
    tool = HttpTool(
        method="GET", url=target.base + "/issues/{issue_id}?q={q}", allowed_hosts=(target.host,), body="none"
    )
    result = run_tool(tool, call({"issue_id": "../admin/x?y=1#z", "q": "a b&c"}))
    assert result.ok, result
    assert result.error is None
    echo = json.loads(result.output)
    assert echo["method"] == "GET"
    assert echo["path"] == "/issues/..%2Fadmin%2Fx%3Fy%3D1%23z?q=a%20b%26c"  # one segment, one query value
    assert echo["key"] == KEY
    assert echo["json"] is None
    assert result.size == len(result.output.encode())
    assert len(target.seen) == 1 and target.seen[0].body == b""


def test_post_sends_the_arguments_not_in_the_url_as_json(target: Target) -> None:
    tool = HttpTool(
        url=target.base + "/repos/{repo}/issues",
        allowed_hosts=(target.host,),
        headers={"X-Static": "yes", "Idempotency-Key": "overridden?"},
    )
    arguments = {"repo": "site", "title": "Broken link", "labels": ["bug"], "n": 3}
    result = run_tool(tool, call(arguments))
    assert result.ok, result
    echo = json.loads(result.output)
    assert echo == {
        "method": "POST",
        "path": "/repos/site/issues",
        "key": KEY,  # the static header cannot replace the call's key
        "json": {"title": "Broken link", "labels": ["bug"], "n": 3},
    }
    seen = target.seen[0]
    assert seen.headers["X-Static"] == "yes"
    assert seen.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_other_methods(target: Target, method: str) -> None:
    tool = HttpTool(method=method.lower(), url=target.base + "/things/1", allowed_hosts=(target.host,))
    result = run_tool(tool, call({"v": 1}))
    assert result.ok, result
    assert json.loads(result.output)["method"] == method


def test_a_host_not_listed_is_refused_before_any_request(target: Target) -> None:
    for allowed in (("example.com",), ("127.0.0.1",), ("127.0.0.1:1",)):  # a bare host means the default port
        tool = HttpTool(url=target.base + "/x", allowed_hosts=allowed)
        result = run_tool(tool, call())
        assert not result.ok
        assert result.error == "host not allowed"
        assert target.host in result.output
    assert target.seen == []


def test_an_unknown_placeholder_is_refused_before_any_request(target: Target) -> None:
    tool = HttpTool(url=target.base + "/issues/{issue_id}", allowed_hosts=(target.host,))
    result = run_tool(tool, call({"other": 1}))
    assert not result.ok
    assert result.error == "missing argument: issue_id"
    for bad in ("/{0}", "/{}", "/{a.__class__}", "/{a[0]}", "/{a!r}", "/{a:>10}"):
        tool = HttpTool(url=target.base + bad, allowed_hosts=(target.host,))
        refused = run_tool(tool, call({"a": "x"}))
        assert not refused.ok and refused.error is not None and refused.error.startswith("bad template"), bad
    assert target.seen == []


def test_a_redirect_to_another_host_is_not_followed(targets: list[Target]) -> None:
    first, second = targets
    tool = HttpTool(method="GET", url=first.base + "/redirect", allowed_hosts=(first.host,), body="none")
    result = run_tool(tool, call())
    assert not result.ok
    assert result.error == "http 302"
    assert second.base in result.output
    assert len(first.seen) == 1
    assert second.seen == []


def test_a_slow_server_is_a_timeout(target: Target) -> None:
    tool = HttpTool(method="GET", url=target.base + "/slow", allowed_hosts=(target.host,), body="none")
    result = run_tool(tool, call(timeout=0.3))
    assert not result.ok
    assert result.error == "timeout"
    assert result.duration_ms < 3000
    assert len(target.seen) == 1  # the request got there: a timeout says nothing about the effect


def test_an_oversized_response_is_capped_and_refused(target: Target) -> None:
    tool = HttpTool(
        method="GET", url=target.base + "/big", allowed_hosts=(target.host,), body="none", max_response_bytes=100
    )
    result = run_tool(tool, call())
    assert not result.ok
    assert result.error == "response too large"
    assert result.size == 2000  # from Content-Length, refused before reading
    assert len(result.output) < 200

    streamed = run_tool(
        HttpTool(
            method="GET",
            url=target.base + "/big-stream",
            allowed_hosts=(target.host,),
            body="none",
            max_response_bytes=150,
        ),
        call(),
    )
    assert not streamed.ok
    assert streamed.error == "response too large"
    assert streamed.output == "y" * 150
    assert streamed.size == 151  # read one byte past the cap, no more


def test_a_5xx_is_a_failure_with_the_body_as_output(target: Target) -> None:
    tool = HttpTool(method="GET", url=target.base + "/down", allowed_hosts=(target.host,), body="none")
    result = run_tool(tool, call())
    assert result == ToolResult(False, "down for maintenance", "http 503", result.duration_ms, 20)


def test_a_closed_port_and_bad_urls_are_failures_not_exceptions() -> None:
    with socket.socket() as bound:  # bound, never listening: connections to it are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        tool = HttpTool(url=f"http://127.0.0.1:{port}/x", allowed_hosts=(f"127.0.0.1:{port}",))
        refused = run_tool(tool, call())
    assert (refused.ok, refused.error) == (False, "connection refused")
    bad = run_tool(HttpTool(url="file:///etc/passwd", allowed_hosts=("",)), call())
    assert (bad.ok, bad.error) == (False, "bad url")
    creds = run_tool(HttpTool(url="http://u:p@127.0.0.1/x", allowed_hosts=("127.0.0.1",)), call())
    assert (creds.ok, creds.error) == (False, "bad url")
    method = run_tool(HttpTool(method="TRACE", url="http://127.0.0.1/x", allowed_hosts=("127.0.0.1",)), call())
    assert (method.ok, method.error) == (False, "bad tool")


# --- commands ------------------------------------------------------------------------------------

PY = sys.executable


def test_each_argv_element_is_one_argument_and_no_shell_sees_it() -> None:
    hostile = "; rm -rf / && echo $(whoami) `id` 'single' \"double\" | cat > /tmp/x *"
    script = "import json, sys; print(json.dumps(sys.argv[1:]))"
    tool = CommandTool(argv=(PY, "-c", script, "{a}", "pre-{b}-post", "{n}"))
    result = run_tool(tool, call({"a": hostile, "b": "two words", "n": 7}))
    assert result.ok, result
    assert json.loads(result.output) == [hostile, "pre-two words-post", "7"]
    assert result.size == len(result.output.encode())


def test_argv0_must_be_literal_and_a_missing_argument_runs_nothing(tmp_path: Path) -> None:
    chosen = run_tool(CommandTool(argv=("{program}", "x")), call({"program": "/bin/rm"}))
    assert (chosen.ok, chosen.error) == (False, "bad tool")
    marker = tmp_path / "ran"
    tool = CommandTool(argv=(PY, "-c", f"open({str(marker)!r}, 'w')", "{missing}"))
    result = run_tool(tool, call({"other": 1}))
    assert (result.ok, result.error) == (False, "missing argument: missing")
    assert not marker.exists()
    nested = run_tool(CommandTool(argv=(PY, "-c", "pass", "{a}")), call({"a": ["x", "y"]}))
    assert not nested.ok and nested.error is not None and "must be a string" in nested.error


def test_a_timeout_kills_the_command_quickly() -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    result = run_tool(CommandTool(argv=(sleep, "5")), call(timeout=0.3))
    assert not result.ok
    assert result.error == "timeout"
    assert result.duration_ms < 2500


def _gone_or_dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}  # an orphan waiting for init to reap it


def test_a_timeout_kills_the_whole_group_and_leaves_no_zombie() -> None:
    script = textwrap.dedent(
        """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.argv[1], "30"])
        print(os.getpid(), child.pid, flush=True)
        time.sleep(30)
        """
    )
    sleep = shutil.which("sleep")
    assert sleep is not None
    tool = CommandTool(argv=(PY, "-c", script, "{sleep}"))
    result = run_tool(tool, call({"sleep": sleep}, timeout=2.0))
    assert result.error == "timeout"
    pid, grandchild = (int(word) for word in result.output.split())  # the output so far comes back
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped: not even a zombie
    deadline = time.monotonic() + DEADLINE
    while not _gone_or_dead(grandchild):
        assert time.monotonic() < deadline, "the grandchild outlived the timeout"
        time.sleep(0.01)


def test_a_nonzero_exit_is_a_failure_with_its_output() -> None:
    tool = CommandTool(argv=(PY, "-c", "import sys; print('bad input'); sys.stderr.write('oops'); sys.exit(2)"))
    result = run_tool(tool, call())
    assert not result.ok
    assert result.error == "exit 2"
    assert "bad input" in result.output and "oops" in result.output  # stderr is merged


def test_only_allowed_variables_reach_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORLOJD_TEST_ALLOWED", "yes")
    monkeypatch.setenv("ORLOJD_TEST_SECRET", "hunter2")
    monkeypatch.setenv("ORLOJD_IDEMPOTENCY_KEY", "stale")  # listed, yet the call's key wins
    tool = CommandTool(
        argv=(PY, "-c", "import json, os; print(json.dumps(dict(os.environ)))"),
        env_allow=("ORLOJD_TEST_ALLOWED", "ORLOJD_TEST_UNSET", "ORLOJD_IDEMPOTENCY_KEY"),
    )
    result = run_tool(tool, call())
    assert result.ok, result
    env = json.loads(result.output)
    assert env["ORLOJD_TEST_ALLOWED"] == "yes"
    assert env["ORLOJD_IDEMPOTENCY_KEY"] == KEY
    assert "ORLOJD_TEST_SECRET" not in env
    assert "ORLOJD_TEST_UNSET" not in env
    assert "PATH" not in env  # only if listed
    assert "HOME" not in env


def test_the_working_directory_is_honoured(tmp_path: Path) -> None:
    (tmp_path / "here.txt").write_text("found")
    tool = CommandTool(argv=(PY, "-c", "print(open('here.txt').read())"), cwd=tmp_path)
    result = run_tool(tool, call())
    assert result.ok, result
    assert result.output.strip() == "found"
    missing = run_tool(CommandTool(argv=(PY, "-c", "pass"), cwd=tmp_path / "nope"), call())
    assert (missing.ok, missing.error) == (False, "bad cwd")


def test_the_output_is_capped_and_counted() -> None:
    tool = CommandTool(argv=(PY, "-c", "import sys; sys.stdout.write('x' * 300000)"), max_output_bytes=100)
    result = run_tool(tool, call())
    assert not result.ok
    assert result.error == "output too large"
    assert result.output == "x" * 100
    assert result.size == 300000


def test_a_missing_program_is_a_failure() -> None:
    result = run_tool(CommandTool(argv=("/nonexistent/orlojd-tool",)), call())
    assert (result.ok, result.error) == (False, "command not found")


# --- python --------------------------------------------------------------------------------------

MODULE = """
import threading

release = threading.Event()
finished = threading.Event()

def echo(arguments, key):
    arguments["mutated"] = True
    return {"arguments": arguments, "key": key}

def text(arguments, key):
    return "hello " + arguments["name"]

def broken(arguments, key):
    raise ValueError("bad repo name")

def slow(arguments, key):
    release.wait(10)
    finished.set()
    return "late"

def big(arguments, key):
    return "z" * 50

def number(arguments, key):
    return 42

class Tools:
    @staticmethod
    def nested(arguments, key):
        return "nested"
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    name = f"orlojd_test_tools_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    result = run_tool(PythonTool(entry_point=f"{name}:text"), call({"name": "import"}))
    assert result.ok, result
    loaded = sys.modules[name]
    yield loaded
    loaded.release.set()
    sys.modules.pop(name, None)


def test_a_dict_result_is_json_and_the_arguments_are_a_copy(module: ModuleType) -> None:
    arguments = {"repo": "acme/site", "n": 2}
    result = run_tool(PythonTool(entry_point=f"{module.__name__}:echo"), call(arguments))
    assert result.ok, result
    assert json.loads(result.output) == {"arguments": {"repo": "acme/site", "n": 2, "mutated": True}, "key": KEY}
    assert arguments == {"repo": "acme/site", "n": 2}
    assert result.size == len(result.output.encode())


def test_a_str_result_and_a_nested_entry_point(module: ModuleType) -> None:
    assert run_tool(PythonTool(entry_point=f"{module.__name__}:text"), call({"name": "ada"})).output == "hello ada"
    assert run_tool(PythonTool(entry_point=f"{module.__name__}:Tools.nested"), call()).output == "nested"


def test_an_exception_is_crashed(module: ModuleType) -> None:
    result = run_tool(PythonTool(entry_point=f"{module.__name__}:broken"), call())
    assert not result.ok
    assert result.error == "crashed: ValueError: bad repo name"
    missing_key = run_tool(PythonTool(entry_point=f"{module.__name__}:text"), call({}))
    assert missing_key.error == "crashed: KeyError: 'name'"


def test_a_slow_function_is_a_timeout_and_its_result_abandoned(module: ModuleType) -> None:
    result = run_tool(PythonTool(entry_point=f"{module.__name__}:slow"), call(timeout=0.2))
    assert not result.ok
    assert result.error == "timeout"
    assert result.duration_ms < 2000
    assert not module.finished.is_set()  # still running in its thread: it cannot be killed
    module.release.set()
    assert module.finished.wait(DEADLINE)


def test_bad_entry_points_and_results(module: ModuleType) -> None:
    assert run_tool(PythonTool(entry_point="orlojd_no_such_module:f"), call()).error == "entry point not found"
    assert run_tool(PythonTool(entry_point=f"{module.__name__}:nope"), call()).error == "entry point not found"
    assert run_tool(PythonTool(entry_point="no_colon"), call()).error == "bad tool"
    assert run_tool(PythonTool(entry_point=f"{module.__name__}:number"), call()).error == "bad result"


def test_a_python_result_over_the_cap(module: ModuleType) -> None:
    result = run_tool(PythonTool(entry_point=f"{module.__name__}:big", max_output_bytes=10), call())
    assert (result.ok, result.output, result.error, result.size) == (False, "z" * 10, "output too large", 50)


# --- needs_of ------------------------------------------------------------------------------------


def test_needs_of_renders_resource_templates() -> None:
    requires = [("write", "repo:{repo}"), ("read", "issues"), ("write", "repo:{repo}"), ("read", "{org}/{repo}")]
    needs = needs_of(requires, {"repo": "acme/site", "org": "acme", "unused": 1})
    assert needs == (("write", "repo:acme/site"), ("read", "issues"), ("read", "acme/acme/site"))
    assert needs_of([], {"a": 1}) == ()
    assert needs_of([("read", "{{literal}}")], {}) == (("read", "{literal}"),)


def test_needs_of_names_a_missing_argument() -> None:
    with pytest.raises(ValueError, match="missing argument: repo"):
        needs_of([("write", "repo:{repo}")], {"org": "acme"})
    with pytest.raises(ValueError, match="must be a string"):
        needs_of([("write", "repo:{repo}")], {"repo": {"name": "x"}})
    with pytest.raises(ValueError, match="bad template"):
        needs_of([("write", "repo:{repo.__class__}")], {"repo": "x"})
