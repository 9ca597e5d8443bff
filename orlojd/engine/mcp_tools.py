"""MCP tools: run one call of a Tool of type ``mcp`` against the McpServer it names, and say what happened.

This module owns ``McpTool`` (the config of one MCP tool: which server, how to reach it, which tool),
its construction from the manifests (``mcp_tool_of``, ``resolve_mcp_tool``) and ``run_mcp``, which
``tool_executors.run_tool`` dispatches to. It speaks MCP through the official Python SDK (``mcp``),
imported on the first call only (it is a large import).

One server session per call: a stdio server is started for the call and stopped after it, an HTTP
session is opened and closed. Simple and isolated (no state shared between calls, tasks or agents,
nothing to reconnect, so ``reconnect`` is not used), at the price of the server's start-up time on
every call.

* ``stdio``: the server is ``command`` + ``args``, one process, never a shell, in its own session
  (process group). Its environment is only the McpServer's declared ``env`` (values and resolved
  ``secretRef`` s), ``PATH`` (the daemon's, unless declared) and ``ORLOJD_IDEMPOTENCY_KEY``. stdin
  and stdout carry newline-delimited JSON-RPC; the last 4 KiB of stderr are kept to explain a
  crash. After the call (or on timeout) stdin is closed, the server gets a short grace to exit,
  then its whole process group is killed and the process reaped: nothing stays behind.
* ``http``: streamable HTTP to ``endpoint`` only. The SDK follows a redirect only on the endpoint's
  own origin, and no proxy is used whatever the environment says, so no other host is reached.
  ``auth`` becomes a header (``Authorization: Bearer ...`` or ``headerName: ...``).

A call needs the tool to be in ``toolFilter.include`` when that list is non-empty; otherwise it is
refused before any process starts or connection opens. The idempotency key goes in the request's
``_meta`` (``{"idempotencyKey": key}``), and also as ``ORLOJD_IDEMPOTENCY_KEY`` (stdio) or the
``Idempotency-Key`` header (http). The call's timeout covers start, handshake and call. The text
content of the result is the output (non-text blocks are named, structured content is JSON when
there is no text); ``isError`` is a failure ``mcp error: <text>``; output over
``max_output_bytes`` is a failure ``output too large``. ``run_mcp`` never raises.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urlsplit

from orlojd.core.manifests.base import split_ref
from orlojd.engine.tool_calls import Outcome, ToolCall, describe, short_reason

if TYPE_CHECKING:
    from mcp.client._transport import TransportStreams
    from mcp_types import RequestParamsMeta

    from orlojd.core.manifests.extensions import McpServer
    from orlojd.core.manifests.tools import Tool

__all__ = ["McpTool", "mcp_tool_of", "resolve_mcp_tool", "run_mcp", "server_env"]

IDEMPOTENCY_ENV = "ORLOJD_IDEMPOTENCY_KEY"
_STDERR_TAIL = 4096
_EXIT_GRACE = 0.5  # seconds a stdio server has to exit by itself once its stdin is closed
_BACKSTOP = 5.0  # seconds past the deadline before the runner thread is given up on
_FRAME_OVERHEAD = 64 * 1024  # a JSON-RPC line may exceed the output cap by this much (envelope, escaping)


@dataclass(frozen=True, kw_only=True)
class McpTool:
    """One MCP tool of one server. ``env`` and ``headers`` hold resolved secrets: never shown in a repr."""

    server: str  # "namespace/name" of the McpServer, for messages
    tool_name: str  # the MCP tool's own name (Tool.spec.mcpToolName)
    transport: Literal["stdio", "http"]
    argv: tuple[str, ...] = ()  # stdio: command + args
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # stdio: the declared env, resolved
    endpoint: str | None = None  # http: the streamable HTTP endpoint
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # http: auth header
    include: tuple[str, ...] = ()  # toolFilter.include; empty = every tool
    max_output_bytes: int = 1_000_000


def server_env(server: McpServer, resolve_secret: Callable[[str], str]) -> dict[str, str]:
    """The McpServer's declared env: each ``value``, or its ``secretRef`` through ``resolve_secret``.

    A secret that cannot be resolved is a ``ValueError`` naming the server, the variable and the Secret
    (never the value).
    """
    env: dict[str, str] = {}
    where = f"McpServer {server.metadata.namespace}/{server.metadata.name}"
    for entry in server.spec.env:
        if entry.secret_ref is not None:
            env[entry.name] = _secret(resolve_secret, entry.secret_ref, f"{where} env {entry.name}")
        else:
            env[entry.name] = entry.value or ""
    return env


def _secret(resolve_secret: Callable[[str], str], ref: str, where: str) -> str:
    try:
        return resolve_secret(ref)
    except Exception as exc:
        raise ValueError(f"{where}: Secret {ref!r} could not be resolved ({type(exc).__name__}: {exc})") from None


def mcp_tool_of(tool: Tool, server: McpServer, env: Mapping[str, str], *, auth_secret: str | None = None) -> McpTool:
    """The ``McpTool`` of a Tool of type mcp and the McpServer its ``mcpServerRef`` names.

    ``env`` is the server's env already resolved (``server_env``); ``auth_secret`` the value of
    ``auth.secretRef`` for an http server with auth. A mismatch is a ``ValueError`` naming the field.
    """
    where = f"Tool {tool.metadata.namespace}/{tool.metadata.name}"
    spec, sspec = tool.spec, server.spec
    if spec.type != "mcp" or not spec.mcp_tool_name:
        raise ValueError(f"{where}: not a tool of type 'mcp' with 'mcpToolName'")
    name = f"{server.metadata.namespace}/{server.metadata.name}"
    ref = split_ref(spec.mcp_server_ref or "", tool.metadata.namespace)
    if ref != (server.metadata.namespace, server.metadata.name):
        raise ValueError(f"{where}: mcpServerRef is {spec.mcp_server_ref!r}, not McpServer {name}")
    common: dict[str, Any] = {
        "server": name,
        "tool_name": spec.mcp_tool_name,
        "include": tuple(sspec.tool_filter.include),
    }
    if sspec.transport == "stdio":
        assert sspec.command is not None  # the manifest model requires it for stdio
        return McpTool(transport="stdio", argv=(sspec.command, *sspec.args), env=dict(env), **common)
    assert sspec.endpoint is not None  # the manifest model requires it for http
    parts = urlsplit(sspec.endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"McpServer {name}: endpoint {sspec.endpoint!r} must be an http:// or https:// URL")
    headers: dict[str, str] = {}
    auth = sspec.auth
    if auth is not None and auth.secret_ref is not None:
        if auth_secret is None:
            raise ValueError(f"McpServer {name}: auth.secretRef {auth.secret_ref!r} given but not resolved")
        if auth.profile == "api_key_header":
            if not auth.header_name:
                raise ValueError(f"McpServer {name}: auth profile 'api_key_header' needs 'headerName'")
            headers[auth.header_name] = auth_secret
        else:
            headers["Authorization"] = f"Bearer {auth_secret}"
    return McpTool(transport="http", endpoint=sspec.endpoint, headers=headers, **common)


def resolve_mcp_tool(tool: Tool, server: McpServer, resolve_secret: Callable[[str], str]) -> McpTool:
    """``mcp_tool_of`` with the server's env and auth secret resolved through ``resolve_secret``."""
    auth = server.spec.auth
    secret = None
    if server.spec.transport == "http" and auth is not None and auth.secret_ref is not None:
        where = f"McpServer {server.metadata.namespace}/{server.metadata.name} auth"
        secret = _secret(resolve_secret, auth.secret_ref, where)
    return mcp_tool_of(tool, server, server_env(server, resolve_secret), auth_secret=secret)


# --- running a call ------------------------------------------------------------------------------


@dataclass
class _Process:
    """What the runner thread learns about a stdio server, read by the caller's thread."""

    pid: int | None = None
    returncode: int | None = None
    stderr: bytearray = field(default_factory=bytearray)
    too_large: bool = False


def run_mcp(spec: McpTool, call: ToolCall, started: float) -> Outcome:
    """Run one call; ``(ok, output, error, size)``, every failure a value, never an exception."""
    if spec.include and spec.tool_name not in spec.include:
        text = f"MCP tool {spec.tool_name!r} is not in toolFilter.include of McpServer {spec.server}"
        return False, text, "tool not allowed", 0
    if spec.transport == "stdio" and not spec.argv:
        return False, f"McpServer {spec.server} has no command", "bad tool", 0
    if spec.transport == "http" and not spec.endpoint:
        return False, f"McpServer {spec.server} has no endpoint", "bad tool", 0
    deadline = started + call.timeout
    proc = _Process()
    box: dict[str, Any] = {}

    def work() -> None:
        import anyio

        try:
            box["outcome"] = anyio.run(_call, spec, call, deadline, proc)
        except BaseException as exc:  # reported, not raised: the thread has no one to raise to
            box["exception"] = exc

    worker = threading.Thread(target=work, name=f"mcp-{call.tool}", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()) + _BACKSTOP)
    if worker.is_alive():  # the SDK's own shutdown did not finish: kill the server from here
        _kill_group(proc.pid)
        return False, f"no result within {call.timeout:g} s from McpServer {spec.server}", "timeout", 0
    if "exception" in box:
        return _failure(spec, proc, box["exception"])
    outcome: Outcome = box["outcome"]
    return outcome


def _kill_group(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


async def _call(spec: McpTool, call: ToolCall, deadline: float, proc: _Process) -> Outcome:
    import anyio
    from mcp.client.client import Client

    transport = _stdio(spec, call, proc, deadline) if spec.transport == "stdio" else _http(spec, call)
    with anyio.move_on_after(max(0.0, deadline - time.monotonic())) as scope:
        async with Client(transport, cache=None, client_info=None) as client:
            meta = cast("RequestParamsMeta", {"idempotencyKey": call.idempotency_key})
            result = await client.call_tool(spec.tool_name, dict(call.arguments), meta=meta)
        return _result(spec, result)
    assert scope.cancelled_caught
    return False, f"no result within {call.timeout:g} s from McpServer {spec.server}", "timeout", 0


def _result(spec: McpTool, result: Any) -> Outcome:
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "content")
        parts.append(block.text if kind == "text" else f"[{kind} content not shown]")
    if not any(getattr(block, "type", "") == "text" for block in result.content) and (
        result.structured_content is not None
    ):
        parts = [json.dumps(result.structured_content, ensure_ascii=False)]
    raw = "\n".join(parts).encode("utf-8", errors="replace")
    cap = spec.max_output_bytes
    text = raw[:cap].decode("utf-8", errors="replace")
    if len(raw) > cap:
        return False, text, "output too large", len(raw)
    if result.is_error:
        return False, text, short_reason(f"mcp error: {text}") if text else "mcp error", len(raw)
    return True, text, None, len(raw)


def _failure(spec: McpTool, proc: _Process, raised: BaseException) -> Outcome:
    """A call that raised: the server stopped, refused the call, sent too much, or could not be reached."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED

    leaves = _leaves(raised)
    exc = next((leaf for leaf in leaves if isinstance(leaf, MCPError)), leaves[0])
    stderr = proc.stderr.decode("utf-8", errors="replace").strip()
    if proc.too_large:
        return False, f"McpServer {spec.server} sent a message over the output cap", "output too large", 0
    if isinstance(exc, FileNotFoundError) and spec.transport == "stdio":
        return False, f"McpServer {spec.server}: command not found: {spec.argv[0]}", "command not found", 0
    if isinstance(exc, PermissionError) and spec.transport == "stdio":
        return False, f"McpServer {spec.server}: not executable: {spec.argv[0]}", "not executable", 0
    closed = not isinstance(exc, MCPError) or exc.code == CONNECTION_CLOSED
    if closed and proc.returncode is not None:  # it went away by itself before answering
        code = proc.returncode
        how = f"exit {code}" if code >= 0 else f"killed by signal {-code}"
        text = f"McpServer {spec.server} stopped ({how}) before answering" + (f": {stderr}" if stderr else "")
        return False, text, short_reason(f"mcp server {spec.server} exited ({how})"), 0
    if isinstance(exc, MCPError):
        text = f"McpServer {spec.server} refused the call: {exc.message}"
        return False, text, short_reason(f"mcp error {exc.code}: {exc.message}"), 0
    text = f"McpServer {spec.server}: {describe(exc)}" + (f" (stderr: {stderr})" if stderr else "")
    return False, text, short_reason(f"mcp server {spec.server} failed: {describe(exc)}"), 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


@contextlib.asynccontextmanager
async def _stdio(spec: McpTool, call: ToolCall, proc: _Process, deadline: float) -> AsyncIterator[TransportStreams]:
    """The server as a process in its own group, its stdout and stdin as the session's streams."""
    import subprocess

    import anyio
    import mcp_types
    from mcp.shared.message import SessionMessage

    env = dict(spec.env)
    if "PATH" not in env and "PATH" in os.environ:
        env["PATH"] = os.environ["PATH"]
    env[IDEMPOTENCY_ENV] = call.idempotency_key
    process = await anyio.open_process(
        list(spec.argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    proc.pid = process.pid
    line_cap = spec.max_output_bytes + _FRAME_OVERHEAD
    read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)

    async def read_stdout() -> None:
        assert process.stdout is not None
        buffer = bytearray()
        async with read_writer:
            with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                async for chunk in process.stdout:
                    buffer += chunk
                    while (end := buffer.find(b"\n")) >= 0:
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                        if line.strip():
                            await read_writer.send(_parse(line, mcp_types, SessionMessage))
                    if len(buffer) > line_cap:  # a message this long is over the cap: stop reading it
                        proc.too_large = True
                        return

    async def read_stderr() -> None:
        assert process.stderr is not None
        with contextlib.suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            async for chunk in process.stderr:
                proc.stderr += chunk
                del proc.stderr[:-_STDERR_TAIL]

    async def write_stdin() -> None:
        assert process.stdin is not None
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
            async with write_reader:
                async for message in write_reader:
                    data = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
                    await process.stdin.send(data.encode("utf-8"))
        await read_writer.aclose()  # the server cannot be written to: the session sees the end

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read_stdout)
            tasks.start_soon(read_stderr)
            tasks.start_soon(write_stdin)
            try:
                yield read_stream, write_stream
            finally:
                with anyio.CancelScope(shield=True):  # past the deadline, no grace: it is a timeout
                    await _stop(process, proc, _EXIT_GRACE if time.monotonic() < deadline else 0.0)
                tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:  # only if the task group failed before the stop above
                _kill_group(process.pid)
                with anyio.move_on_after(2.0):
                    await process.wait()
            for stream in (read_stream, write_stream, read_writer, write_reader):
                await stream.aclose()


def _parse(line: bytes, mcp_types: Any, session_message: Any) -> Any:
    try:
        return session_message(mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        return exc


async def _stop(process: Any, proc: _Process, grace: float) -> None:
    """Close stdin, give the server a moment to exit, then kill its whole group and reap it (no zombie).

    ``proc.returncode`` is set when the server stopped by itself (before or within the grace), not when killed.
    """
    import anyio

    if process.returncode is None:
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await process.stdin.aclose()
        with anyio.move_on_after(grace):
            while process.returncode is None:
                await anyio.sleep(0.01)
    proc.returncode = process.returncode
    _kill_group(process.pid)  # also ends anything it started in its group
    with anyio.move_on_after(2.0):
        await process.wait()
    for stream in (process.stdout, process.stderr):
        with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            await stream.aclose()
    # Close asyncio's subprocess transport now, inside the loop: left to the garbage collector, it would
    # try to close itself on a loop already closed. Nothing public exposes it (the SDK does the same).
    close = getattr(getattr(getattr(process, "_process", None), "_transport", None), "close", None)
    if callable(close):
        with contextlib.suppress(PermissionError):
            close()


@contextlib.asynccontextmanager
async def _http(spec: McpTool, call: ToolCall) -> AsyncIterator[TransportStreams]:
    """Streamable HTTP to the endpoint only: no proxy from the environment, same-origin redirects only."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    headers = {**spec.headers, "Idempotency-Key": call.idempotency_key}
    timeout = httpx2.Timeout(max(call.timeout, 1.0))
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout, trust_env=False, follow_redirects=False) as client,
        streamable_http_client(spec.endpoint or "", http_client=client) as streams,
    ):
        yield streams
