"""Tool executors: run one tool call the governance gate already allowed, and say what happened.

This module owns the execution of a single call of a Tool, of three kinds, each a plain config
dataclass (the Tool manifest is mapped onto them elsewhere):

* ``HttpTool``: one HTTP request. The method is fixed, the URL is a template whose ``{name}``
  placeholders are filled from the call's arguments (URL-quoted, so a value cannot add a path
  segment, a query or a host). The rendered URL's host must be in ``allowed_hosts`` (exact
  ``host`` or ``host:port``; a bare ``host`` means the scheme's default port), checked before
  any connection is made. Redirects are never followed (a 3xx is a failure that names the
  status), so a redirect cannot lead to a host that is not listed. No proxy is used, whatever
  the environment says. The response is read up to ``max_response_bytes``; a longer one is a
  failure (``response too large``) with the capped text as output.
* ``CommandTool``: one process, never a shell. Each argv element is a template rendered on its
  own, so a value is always exactly one argument (``"; rm -rf /"`` is text). ``argv[0]`` must be
  literal: the model fills arguments, never chooses the program. The child sees only the
  variables in ``env_allow`` (``PATH`` only if listed) plus ``ORLOJD_IDEMPOTENCY_KEY``; stdin is
  empty; stderr is merged into stdout. It runs in its own session: on timeout the whole process
  group is killed and the child is reaped (no zombie), and the output so far is returned.
* ``PythonTool``: a function named by ``package.module:function``, called as
  ``function(arguments, idempotency_key)`` in a daemon worker thread. A thread cannot be killed:
  on timeout the call is reported as ``timeout`` and its result abandoned, but the function goes
  on running in the background until it returns by itself.
* ``McpTool`` (in ``orlojd.engine.mcp_tools``): one ``tools/call`` to an MCP server, a stdio server
  started for the call (its process group killed after it) or a streamable HTTP endpoint.

``run_tool(spec, call)`` never raises for a failure of the tool or of its call: every failure is
a ``ToolResult(ok=False, error=...)`` with a short reason (``timeout``, ``http 503``, ``exit 2``,
``host not allowed``, ``response too large``, ``crashed: ValueError: ...``, ``mcp error: ...``) and, in ``output``,
what the model should see.

Delivery is at least once, not exactly once. A call may run again after a crash, a lease loss or
a retry, and a timeout says nothing about whether the effect happened (the request may have
reached the server, the process may have written before it was killed, the abandoned thread
keeps running). Each call carries an idempotency key (``task:<id>/step:<n>/attempt:<k>``, made
by the caller): it goes out as the ``Idempotency-Key`` header, the ``ORLOJD_IDEMPOTENCY_KEY``
variable and the second argument of a Python tool. Deduplicating effects by that key is the
tool's job; this module only hands the key over.

Templates (URL, argv elements) are ``core/tool_templates.py``'s: plain ``{name}`` placeholders over
the arguments, scalar values only; anything else is refused before the call.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import importlib
import io
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from orlojd.core.tool_templates import TemplateError, render, template_names
from orlojd.engine.mcp_tools import McpTool, run_mcp
from orlojd.engine.tool_calls import Outcome, ToolCall, ToolResult, describe, short_reason

__all__ = [
    "CommandTool",
    "HttpTool",
    "McpTool",
    "PythonTool",
    "ToolCall",
    "ToolResult",
    "run_tool",
]

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
IDEMPOTENCY_ENV = "ORLOJD_IDEMPOTENCY_KEY"
_CHUNK = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, kw_only=True)
class HttpTool:
    method: str = "POST"  # GET, POST, PUT, PATCH or DELETE
    url: str  # template: "https://api.example.com/issues/{issue_id}"
    allowed_hosts: tuple[str, ...]  # exact "host" (the scheme's default port) or "host:port"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Literal["json", "none"] = "json"  # json: the arguments not used in the URL, as a JSON object
    max_response_bytes: int = 1_000_000


@dataclass(frozen=True, kw_only=True)
class CommandTool:
    argv: tuple[str, ...]
    cwd: Path | None = None
    env_allow: tuple[str, ...] = ()
    max_output_bytes: int = 1_000_000


@dataclass(frozen=True, kw_only=True)
class PythonTool:
    entry_point: str  # "package.module:function" (or "package.module:object.method")
    max_output_bytes: int = 1_000_000


ToolSpec = HttpTool | CommandTool | PythonTool | McpTool


class _Refused(Exception):
    """A call refused before it ran (reason for ``error``, text for the model)."""

    def __init__(self, error: str, output: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.output = output if output is not None else error


# --- the entry point -----------------------------------------------------------------------------


def run_tool(spec: ToolSpec, call: ToolCall) -> ToolResult:
    """Run ``call`` with ``spec``; every failure is a ``ToolResult(ok=False, ...)``, never an exception."""
    started = time.monotonic()
    try:
        if not call.timeout > 0:
            raise _Refused("bad call", f"timeout must be positive, not {call.timeout!r}")
        if isinstance(spec, HttpTool):
            ok, output, error, size = _run_http(spec, call, started)
        elif isinstance(spec, CommandTool):
            ok, output, error, size = _run_command(spec, call, started)
        elif isinstance(spec, PythonTool):
            ok, output, error, size = _run_python(spec, call)
        elif isinstance(spec, McpTool):
            ok, output, error, size = run_mcp(spec, call, started)
        else:
            raise _Refused("bad tool", f"unknown tool kind {type(spec).__name__}")
    except _Refused as refused:
        ok, output, error, size = False, refused.output, refused.error, 0
    except TemplateError as exc:
        ok, output, error, size = False, str(exc), short_reason(str(exc)), 0
    except Exception as exc:  # a bug here must not take the worker down: it is this call's failure
        ok, output, error, size = False, describe(exc), short_reason(f"executor failed: {describe(exc)}"), 0
    return ToolResult(ok, output, error, int((time.monotonic() - started) * 1000), size)


def _decode(data: bytes, charset: str = "utf-8") -> str:
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


# --- http ----------------------------------------------------------------------------------------


def _host_allowed(scheme: str, host: str, port: int, allowed: Sequence[str]) -> bool:
    wanted = {f"{host}:{port}"}
    if port == _DEFAULT_PORTS[scheme]:
        wanted.add(host)
    return any(entry.strip().lower() in wanted for entry in allowed)


def _run_http(spec: HttpTool, call: ToolCall, started: float) -> Outcome:
    method = spec.method.upper()
    if method not in HTTP_METHODS:
        raise _Refused("bad tool", f"method {spec.method!r} is not one of {', '.join(sorted(HTTP_METHODS))}")
    url, used = render(spec.url, call.arguments, quote_values=True)
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise _Refused("bad url", f"only http and https URLs are allowed, not {parts.scheme or 'none'!r}")
    try:
        host, port = (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise _Refused("bad url", f"bad port in URL: {exc}") from None
    if not host:
        raise _Refused("bad url", "the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise _Refused("bad url", "credentials in the URL are not allowed (use headers)")
    if not _host_allowed(parts.scheme, host, port, spec.allowed_hosts):
        raise _Refused("host not allowed", f"host not allowed: {host}:{port}")

    headers = {k: v for k, v in spec.headers.items() if k.lower() != "idempotency-key"}
    payload: bytes | None = None
    if spec.body == "json":
        remaining = {k: v for k, v in call.arguments.items() if k not in used}
        try:
            payload = json.dumps(remaining, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise _Refused("bad arguments", f"arguments are not JSON: {exc}") from None
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    headers["Idempotency-Key"] = call.idempotency_key
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query

    deadline = started + call.timeout
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=call.timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=call.timeout)
    try:
        try:
            conn.connect()
            _settimeout(conn, deadline)
            conn.request(method, target, body=payload, headers=headers)
            _settimeout(conn, deadline)
            response = conn.getresponse()
            return _read_response(spec, response, conn, deadline)
        except TimeoutError:
            return False, "the request timed out", "timeout", 0
        except ConnectionRefusedError:
            return False, f"connection refused by {host}:{port}", "connection refused", 0
        except ssl.SSLError as exc:
            return False, describe(exc), short_reason(f"tls error: {exc}"), 0
        except OSError as exc:
            return False, describe(exc), short_reason(f"connection failed: {describe(exc)}"), 0
        except http.client.HTTPException as exc:
            return False, describe(exc), short_reason(f"bad response: {describe(exc)}"), 0
        except ValueError as exc:  # http.client refuses header values with CR/LF and the like
            return False, str(exc), short_reason(f"bad request: {exc}"), 0
    finally:
        conn.close()


def _settimeout(conn: http.client.HTTPConnection, deadline: float) -> None:
    """The socket timeout for the next operation: what is left of the call's time (none left: a timeout)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    if conn.sock is not None:
        conn.sock.settimeout(left)


def _read_response(
    spec: HttpTool, response: http.client.HTTPResponse, conn: http.client.HTTPConnection, deadline: float
) -> Outcome:
    status = response.status
    charset = response.headers.get_content_charset() or "utf-8"
    cap = spec.max_response_bytes
    length = response.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > cap:
        return False, f"the response has {length} bytes, over the cap of {cap}", "response too large", int(length)
    data = bytearray()
    while len(data) <= cap:
        _settimeout(conn, deadline)
        chunk = response.read1(min(_CHUNK, cap + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    size = len(data)
    text = _decode(bytes(data[:cap]), charset)
    if size > cap:
        return False, text, "response too large", size
    if 300 <= status < 400:
        where = response.getheader("Location") or "nowhere"
        return False, f"redirect to {where} not followed", f"http {status}", size
    if not 200 <= status < 300:
        return False, text, f"http {status}", size
    return True, text, None, size


# --- command -------------------------------------------------------------------------------------


def _run_command(spec: CommandTool, call: ToolCall, started: float) -> Outcome:
    if not spec.argv:
        raise _Refused("bad tool", "the command has no argv")
    if template_names(spec.argv[0]):
        raise _Refused("bad tool", "argv[0] must be literal: the program is not chosen by arguments")
    argv = [render(element, call.arguments)[0] for element in spec.argv]
    if spec.cwd is not None and not spec.cwd.is_dir():
        raise _Refused("bad cwd", f"working directory not found: {spec.cwd}")
    env = {name: os.environ[name] for name in spec.env_allow if name in os.environ}
    env[IDEMPOTENCY_ENV] = call.idempotency_key

    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=spec.cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    except FileNotFoundError:
        return False, f"command not found: {argv[0]}", "command not found", 0
    except PermissionError:
        return False, f"not executable: {argv[0]}", "not executable", 0
    assert proc.stdout is not None
    reader = _CappedReader(cast(io.BufferedReader, proc.stdout), spec.max_output_bytes)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=max(0.0, started + call.timeout - time.monotonic()))
    except subprocess.TimeoutExpired:
        timed_out = True
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    if timed_out:
        _kill_group(proc)
        proc.wait()  # reap: no zombie
    # The child is gone; a grandchild may still hold the pipe. Wait for EOF until the deadline, then kill the group.
    if not reader.done.wait(max(0.0, started + call.timeout - time.monotonic())):
        _kill_group(proc)
        timed_out = True
        reader.done.wait(1.0)
    data, size = reader.result()
    text = _decode(data)
    if timed_out:
        return False, text, "timeout", size
    if size > spec.max_output_bytes:
        return False, text, "output too large", size
    if proc.returncode != 0:
        reason = f"exit {proc.returncode}" if proc.returncode > 0 else f"killed by signal {-proc.returncode}"
        return False, text, reason, size
    return True, text, None, size


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own session: this kills its children too
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


class _CappedReader:
    """Drains a pipe in a daemon thread, keeping the first ``cap + 1`` bytes and counting all of them."""

    def __init__(self, pipe: io.BufferedReader, cap: int) -> None:
        self.pipe, self.cap = pipe, cap
        self.data = bytearray()
        self.size = 0
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._drain, name="tool-output", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _drain(self) -> None:
        try:
            while chunk := self.pipe.read1(_CHUNK):
                with self.lock:
                    self.size += len(chunk)
                    room = self.cap + 1 - len(self.data)
                    if room > 0:
                        self.data += chunk[:room]
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                self.pipe.close()
            self.done.set()

    def result(self) -> tuple[bytes, int]:
        with self.lock:
            return bytes(self.data[: self.cap]), self.size


# --- python --------------------------------------------------------------------------------------


def _resolve(entry_point: str) -> Callable[..., Any]:
    module_name, sep, qualname = entry_point.partition(":")
    if not sep or not module_name or not qualname:
        raise _Refused("bad tool", f"entry point {entry_point!r} is not 'package.module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise _Refused("entry point not found", f"entry point not found: {exc}") from None
    for attribute in qualname.split("."):
        try:
            target = getattr(target, attribute)
        except AttributeError:
            raise _Refused("entry point not found", f"entry point not found: {entry_point}") from None
    if not callable(target):
        raise _Refused("bad tool", f"entry point {entry_point} is not callable")
    return target  # type: ignore[no-any-return]


def _run_python(spec: PythonTool, call: ToolCall) -> Outcome:
    box: dict[str, Any] = {}
    arguments = copy.deepcopy(dict(call.arguments))  # the function gets its own copy to mutate

    def work() -> None:
        try:
            function = _resolve(spec.entry_point)
            box["value"] = function(arguments, call.idempotency_key)
        except BaseException as exc:  # reported, not raised: the thread has no one to raise to
            box["exception"] = exc

    worker = threading.Thread(target=work, name=f"tool-{call.tool}", daemon=True)
    worker.start()
    worker.join(call.timeout)
    if worker.is_alive():
        # A thread cannot be killed: the call is abandoned and keeps running until it returns by itself.
        return False, f"no result within {call.timeout:g} s; the call was abandoned", "timeout", 0
    if "exception" in box:
        exc = box["exception"]
        if isinstance(exc, _Refused):
            raise exc
        return False, describe(exc), short_reason(f"crashed: {describe(exc)}"), 0
    value = box.get("value")
    if isinstance(value, str):
        raw = value.encode("utf-8", errors="replace")
    elif isinstance(value, dict):
        try:
            raw = json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            return False, f"the result is not JSON: {exc}", "bad result", 0
    else:
        return False, f"the tool returned {type(value).__name__}, not str or dict", "bad result", 0
    cap = spec.max_output_bytes
    text = _decode(raw[:cap])
    if len(raw) > cap:
        return False, text, "output too large", len(raw)
    return True, text, None, len(raw)
