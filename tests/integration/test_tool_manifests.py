"""Tool manifests with executor blocks (``http``, ``command``, ``python``) end to end: they load in both dialects,
bad ones give errors naming the field, ``default_tools`` maps each to its executor config, and the mapped
executors really run (an http call against a local 127.0.0.1 server, a command with shell metacharacters).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from servers import serving

from orlojd.core.diagnostics import format_path
from orlojd.core.manifests.registry import validate_object
from orlojd.core.manifests.tools import Tool
from orlojd.core.tool_templates import needs_of
from orlojd.engine.tool_executors import CommandTool, HttpTool, PythonTool, ToolCall, run_tool
from orlojd.engine.tool_specs import default_tools


def tool_doc(spec: dict[str, Any], name: str = "t") -> dict[str, Any]:
    return {"apiVersion": "orloj.dev/v1", "kind": "Tool", "metadata": {"name": name}, "spec": spec}


def load(spec: dict[str, Any]) -> Tool:
    result = validate_object(tool_doc(spec))
    errors = [p for p in result.problems if p.severity == "error"]
    assert result.obj is not None and not errors, [(format_path(p.path), p.message) for p in result.problems]
    assert isinstance(result.obj, Tool)
    return result.obj


def problems(spec: dict[str, Any]) -> list[str]:
    result = validate_object(tool_doc(spec))
    assert result.obj is None
    return [f"{format_path(p.path)}: {p.message}" for p in result.problems]


HTTP_CAMEL = {
    "type": "http",
    "http": {
        "method": "put",
        "url": "https://api.example.com/issues/{id}",
        "allowedHosts": ["api.example.com"],
        "headers": {"Accept": "application/json"},
        "body": "none",
        "maxResponseBytes": 5000,
    },
    "requires": [{"write": "issue:{id}"}],
}
HTTP_SNAKE = {
    "type": "http",
    "http": {
        "method": "PUT",
        "url": "https://api.example.com/issues/{id}",
        "allowed_hosts": ["api.example.com"],
        "headers": {"Accept": "application/json"},
        "body": "none",
        "max_response_bytes": 5000,
    },
    "requires": [{"write": "issue:{id}"}],
}
COMMAND_CAMEL = {
    "type": "command",
    "command": {"argv": ["git", "-C", "{repo}", "status"], "cwd": "/tmp", "envAllow": ["PATH"], "maxOutputBytes": 99},
}
COMMAND_SNAKE = {
    "type": "command",
    "command": {
        "argv": ["git", "-C", "{repo}", "status"],
        "cwd": "/tmp",
        "env_allow": ["PATH"],
        "max_output_bytes": 99,
    },
}
PYTHON_CAMEL = {"type": "python", "python": {"entryPoint": "pkg.mod:fn", "maxOutputBytes": 77}}
PYTHON_SNAKE = {"type": "python", "python": {"entry_point": "pkg.mod:fn", "max_output_bytes": 77}}


# -- loading ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("camel", "snake"),
    [(HTTP_CAMEL, HTTP_SNAKE), (COMMAND_CAMEL, COMMAND_SNAKE), (PYTHON_CAMEL, PYTHON_SNAKE)],
    ids=["http", "command", "python"],
)
def test_each_block_loads_in_both_dialects_to_the_same_model(camel: dict[str, Any], snake: dict[str, Any]) -> None:
    a, b = load(camel), load(snake)
    assert a == b
    assert a.model_dump(by_alias=True) == b.model_dump(by_alias=True)


def test_http_block_fields() -> None:
    http = load(HTTP_CAMEL).spec.http
    assert http is not None
    assert (http.method, http.body, http.max_response_bytes) == ("PUT", "none", 5000)
    assert http.allowed_hosts == ["api.example.com"]


def test_http_block_defaults_and_own_host() -> None:
    tool = load({"type": "http", "http": {"url": "http://127.0.0.1:8123/x"}})
    assert tool.spec.http is not None
    assert (tool.spec.http.method, tool.spec.http.body, tool.spec.http.max_response_bytes) == (
        "POST",
        "json",
        1_000_000,
    )
    assert tool.spec.http.hosts == ("127.0.0.1:8123",)


def test_manifests_without_blocks_are_unchanged() -> None:
    tool = load({"type": "http", "endpoint": "https://svc.example.com/run"})
    assert (tool.spec.http, tool.spec.command, tool.spec.python) == (None, None, None)
    assert "http" not in tool.spec.model_dump(by_alias=True, exclude_defaults=True)
    assert load({"type": "builtin"}).spec.type == "builtin"


# -- bad manifests ---------------------------------------------------------------------------------------------------


def test_url_host_outside_allowed_hosts_names_both() -> None:
    found = problems(
        {"type": "http", "http": {"url": "https://evil.example.org/x", "allowedHosts": ["api.example.com"]}}
    )
    assert len(found) == 1
    assert found[0].startswith("spec.http")
    assert "evil.example.org" in found[0] and "api.example.com" in found[0] and "allowedHosts" in found[0]


def test_url_port_must_match_allowed_hosts() -> None:
    found = problems(
        {"type": "http", "http": {"url": "https://api.example.com:8443/x", "allowedHosts": ["api.example.com"]}}
    )
    assert "api.example.com:8443" in found[0]
    load({"type": "http", "http": {"url": "https://api.example.com:443/x", "allowedHosts": ["api.example.com"]}})
    load({"type": "http", "http": {"url": "https://api.example.com:8443/x", "allowedHosts": ["api.example.com:8443"]}})


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://{host}/x", "host must be literal"),
        ("ftp://example.com/x", "http:// or https://"),
        ("https://example.com/{0}", "only {name} placeholders"),
        ("https://example.com/{id!r}", "only {name} placeholders"),
    ],
)
def test_bad_urls(url: str, words: str) -> None:
    found = problems({"type": "http", "http": {"url": url}})
    assert any(f.startswith("spec.http") and words in f for f in found), found


def test_placeholder_in_argv0_is_an_error_naming_argv() -> None:
    found = problems({"type": "command", "command": {"argv": ["{program}", "--help"]}})
    assert len(found) == 1
    assert found[0].startswith("spec.command.argv")
    assert "argv[0]" in found[0] and "placeholder" in found[0]


def test_empty_argv_is_an_error() -> None:
    found = problems({"type": "command", "command": {"argv": []}})
    assert found and found[0].startswith("spec.command.argv")


def test_two_blocks_at_once_is_an_error_naming_both() -> None:
    found = problems({"type": "http", "http": {"url": "https://a.example.com/"}, "command": {"argv": ["ls"]}})
    assert len(found) == 1
    assert found[0].startswith("spec")
    assert "http" in found[0] and "command" in found[0] and "at most one" in found[0]


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"type": "builtin", "command": {"argv": ["ls"]}}, "'command' goes with type 'command'"),
        ({"command": {"argv": ["ls"]}}, "'command' goes with type 'command'"),
        ({"type": "command"}, "a tool of type 'command' needs 'command'"),
        ({"type": "python"}, "a tool of type 'python' needs 'python'"),
        ({"type": "http", "endpoint": "https://a/", "http": {"url": "https://a/"}}, "'endpoint' and 'http'"),
    ],
)
def test_block_and_type_must_agree(spec: dict[str, Any], words: str) -> None:
    found = problems(spec)
    assert any(words in f for f in found), found


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "python", "python": {"entryPoint": "no-colon"}}, "spec.python.entryPoint"),
        ({"type": "command", "command": {"argv": ["ls"], "envAllow": ["BAD-NAME"]}}, "spec.command.envAllow"),
        ({"type": "http", "http": {"url": "https://a/", "method": "TRACE"}}, "spec.http.method"),
        ({"type": "http", "http": {"url": "https://a/", "maxResponseBytes": 0}}, "spec.http.maxResponseBytes"),
        ({"type": "http", "http": {"url": "https://a/", "allowedHost": ["a"]}}, "spec.http.allowedHost"),
    ],
)
def test_field_errors_name_the_field(spec: dict[str, Any], field: str) -> None:
    found = problems(spec)
    assert any(f.startswith(field) for f in found), found


# -- default_tools ---------------------------------------------------------------------------------------------------


def test_default_tools_maps_http() -> None:
    assert default_tools(load(HTTP_CAMEL)) == HttpTool(
        method="PUT",
        url="https://api.example.com/issues/{id}",
        allowed_hosts=("api.example.com",),
        headers={"Accept": "application/json"},
        body="none",
        max_response_bytes=5000,
    )


def test_default_tools_http_without_allowed_hosts_allows_only_the_url_host() -> None:
    mapped = default_tools(load({"type": "http", "http": {"method": "GET", "url": "https://Api.Example.com/q/{q}"}}))
    assert isinstance(mapped, HttpTool)
    assert (mapped.method, mapped.allowed_hosts) == ("GET", ("api.example.com",))


def test_default_tools_maps_command() -> None:
    assert default_tools(load(COMMAND_SNAKE)) == CommandTool(
        argv=("git", "-C", "{repo}", "status"), cwd=Path("/tmp"), env_allow=("PATH",), max_output_bytes=99
    )


def test_default_tools_maps_python() -> None:
    assert default_tools(load(PYTHON_CAMEL)) == PythonTool(entry_point="pkg.mod:fn", max_output_bytes=77)


def test_default_tools_endpoint_mapping_unchanged_and_none_otherwise() -> None:
    assert default_tools(load({"type": "http", "endpoint": "http://127.0.0.1:9/run"})) == HttpTool(
        method="POST", url="http://127.0.0.1:9/run", allowed_hosts=("127.0.0.1:9",)
    )
    assert default_tools(load({"type": "builtin"})) is None
    assert default_tools(load({"type": "http"})) is None


def test_requires_templates_render_over_arguments() -> None:
    tool = load(HTTP_CAMEL)
    pairs = [(p.access.value, p.resource) for p in tool.spec.requires]
    assert needs_of(pairs, {"id": "42"}) == (("write", "issue:42"),)


# -- running what the manifests map to -------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[tuple[int, list[tuple[str, str, Any]]]]:
    seen: list[tuple[str, str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.command, self.path, json.loads(raw) if raw else None))
            data = json.dumps({"path": self.path, "key": self.headers.get("Idempotency-Key")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_PUT = do_GET = _answer

        def log_message(self, *args: Any) -> None:
            pass

    with serving(Handler) as httpd:
        yield httpd.server_address[1], seen


def test_http_tool_from_manifest_calls_local_server(server: tuple[int, list[tuple[str, str, Any]]]) -> None:
    port, seen = server
    tool = load(
        {
            "type": "http",
            "http": {
                "method": "POST",
                "url": f"http://127.0.0.1:{port}/issues/{{id}}",
                "allowedHosts": [f"127.0.0.1:{port}"],
            },
        }
    )
    spec = default_tools(tool)
    assert spec is not None
    result = run_tool(spec, ToolCall("t", {"id": "a/b", "title": "hi"}, "task:1/step:1/attempt:1", 5.0))
    assert result.ok, result
    assert json.loads(result.output) == {"path": "/issues/a%2Fb", "key": "task:1/step:1/attempt:1"}
    assert seen == [("POST", "/issues/a%2Fb", {"title": "hi"})]


def test_command_tool_from_manifest_passes_metacharacters_verbatim(tmp_path: Path) -> None:
    tool = load(
        {
            "type": "command",
            "command": {
                "argv": [sys.executable, "-c", "import sys; print(sys.argv[1])", "{text}"],
                "cwd": str(tmp_path),
            },
        }
    )
    spec = default_tools(tool)
    assert isinstance(spec, CommandTool)
    nasty = "x; touch pwned && echo $(id) | cat `whoami` > out &"
    result = run_tool(spec, ToolCall("t", {"text": nasty}, "task:1/step:1/attempt:1", 10.0))
    assert result.ok, result
    assert result.output == nasty + "\n"
    assert list(tmp_path.iterdir()) == []
