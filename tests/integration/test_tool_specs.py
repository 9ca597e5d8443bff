"""Secrets and the Tool -> executor mapping (``adapters/secrets.py``, ``engine/tool_specs.py``) against real things.

Manifests are committed to a real git repository and applied to the real store; http tools call a real HTTP
server on 127.0.0.1 that records the headers it got (and serves OAuth2 tokens); an MCP tool runs the stdio
fixture server of tests/fixtures/mcp as a real process, driven by the agent loop on the scripted model.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from conftest import GitRepo
from manifests import secret
from runs import apply_files, claim_run
from servers import serving

from orlojd.adapters.audit import AuditLog
from orlojd.adapters.secrets import SecretError, SecretResolver
from orlojd.adapters.store import Store
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.registry import validate_object
from orlojd.core.manifests.tools import Tool
from orlojd.engine.tool_executors import HttpTool, ToolCall, run_tool
from orlojd.engine.tool_specs import ToolResolver

SECRET_VALUE = "s3cr3t-value-9f1c"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mcp"
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@dataclass
class Recorder:
    """What the server got: each call's headers, and each OAuth2 token request's form."""

    host: str = ""
    seen: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    made = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/token":
                made.token_requests.append(parse_qs(body.decode()))
                data = json.dumps({"access_token": "tok-1", "expires_in": 3600}).encode()
            else:
                made.seen.append(dict(self.headers.items()))
                data = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with serving(Handler) as httpd:
        made.host = f"127.0.0.1:{httpd.server_address[1]}"
        yield made


def http_tool(name: str, host: str, auth: str) -> str:
    return f"""\
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: {name}
spec:
  type: http
  http:
    method: POST
    url: http://{host}/call
  auth:
{auth}"""


def tool_of(store: Store, name: str) -> Tool:
    key = ResourceKey("Tool", "default", name)
    checked = validate_object(store.inventory_bodies_some(keys=[key])[key])
    assert isinstance(checked.obj, Tool)
    return checked.obj


# -- secrets --------------------------------------------------------------------------------------------------------


@sqlite_only
def test_a_secret_resolves_from_env_file_systemd_credential_and_literal(
    repo: GitRepo, store: Store, tmp_path: Path
) -> None:
    (tmp_path / "key.txt").write_text(SECRET_VALUE + "\n")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "model-key").write_text(SECRET_VALUE)
    repo.write("orlojd.yaml", "secrets:\n  allowLiteral: true\n")
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    apply_files(
        repo,
        store,
        {
            "secrets/env.yaml": secret("from-env", "env: MODEL_KEY"),
            "secrets/file.yaml": secret("from-file", f"file: {tmp_path / 'key.txt'}"),
            "secrets/cred.yaml": secret("from-cred", "systemdCredential: model-key"),
            "secrets/literal.yaml": secret("literal", f"stringData: {{token: {SECRET_VALUE}}}"),
            "secrets/data.yaml": secret("data", f"data: {{value: {encoded}}}"),
        },
    )
    resolve = SecretResolver(store, {"MODEL_KEY": SECRET_VALUE, "CREDENTIALS_DIRECTORY": str(credentials)})
    for name in ("from-env", "from-file", "from-cred"):
        assert resolve(name) == SECRET_VALUE, name
    for name in ("literal", "data"):  # the store keeps only a literal's sha256: never a value to hand out
        with pytest.raises(SecretError, match="literal stringData/data value is never kept"):
            resolve(name)

    bare = SecretResolver(store, {})
    for name, expected in (
        ("from-env", "environment variable MODEL_KEY is not set"),
        ("from-cred", "CREDENTIALS_DIRECTORY is not set; add LoadCredential=model-key"),
        ("missing", "secret default/missing is not applied"),
    ):
        with pytest.raises(SecretError, match=expected) as refused:
            bare(name)
        assert SECRET_VALUE not in str(refused.value)
    (tmp_path / "key.txt").unlink()
    with pytest.raises(SecretError, match=r"from-file: cannot read .*key.txt"):
        resolve("from-file")


# -- http tool auth -------------------------------------------------------------------------------------------------


@sqlite_only
def test_http_tool_auth_profiles_send_the_secret_as_their_header(
    repo: GitRepo, store: Store, recorder: Recorder
) -> None:
    host = recorder.host
    apply_files(
        repo,
        store,
        {
            "secrets/key.yaml": secret("key", "env: TOOL_KEY"),
            "secrets/client.yaml": secret("client", "env: TOOL_CLIENT"),
            "tools/bearer.yaml": http_tool("bearer", host, "    secretRef: key\n"),
            "tools/header.yaml": http_tool(
                "header", host, "    profile: api_key_header\n    secretRef: key\n    headerName: X-Api-Key\n"
            ),
            "tools/basic.yaml": http_tool("basic", host, "    profile: basic\n    secretRef: key\n"),
            "tools/oauth.yaml": http_tool(
                "oauth",
                host,
                f"    profile: oauth2_client_credentials\n    secretRef: client\n    tokenUrl: http://{host}/token\n"
                "    scopes: [tickets.write]\n",
            ),
        },
    )
    resolver = ToolResolver(store, SecretResolver(store, {"TOOL_KEY": "user:pw", "TOOL_CLIENT": "app:shh"}))
    for name in ("bearer", "header", "basic", "oauth", "oauth"):
        spec = resolver(tool_of(store, name))
        assert isinstance(spec, HttpTool)
        assert run_tool(spec, ToolCall(name, {}, "k", 5.0)).ok
    bearer, header, basic, oauth, oauth_again = recorder.seen
    assert bearer["Authorization"] == "Bearer user:pw"
    assert header["X-Api-Key"] == "user:pw" and "Authorization" not in header
    assert basic["Authorization"] == "Basic " + base64.b64encode(b"user:pw").decode()
    assert oauth["Authorization"] == oauth_again["Authorization"] == "Bearer tok-1"
    [token_request] = recorder.token_requests  # cached: one token for both calls
    assert token_request["grant_type"] == ["client_credentials"] and token_request["scope"] == ["tickets.write"]
    assert token_request["client_id"] == ["app"] and token_request["client_secret"] == ["shh"]

    unset = ToolResolver(store, SecretResolver(store, {}))
    with pytest.raises(ValueError, match="tool bearer: auth: secret default/key: environment variable TOOL_KEY"):
        unset(tool_of(store, "bearer"))


# -- MCP through the agent loop -------------------------------------------------------------------------------------


def test_the_agent_loop_calls_an_mcp_tool_through_the_gate(repo: GitRepo, store: Store, tmp_path: Path) -> None:
    from orlojd.engine.agent_loop import AgentLoop
    from orlojd.engine.gate import Gate

    record = tmp_path / "record.jsonl"
    server = f"""\
apiVersion: orloj.dev/v1
kind: McpServer
metadata:
  name: loop
spec:
  transport: stdio
  command: {sys.executable}
  args: ["{FIXTURES / "loop_server.py"}", "{record}"]
  env:
    - name: LOOP_TOKEN
      secretRef: key
"""
    tool = """\
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: echo
spec:
  type: mcp
  mcpServerRef: loop
  mcpToolName: echo
  requires:
    - read: echoes
"""
    agent = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: echoer
spec:
  modelRef: offline
  tools:
    - name: echo
      permissions:
        - read: echoes
"""
    endpoint = """\
apiVersion: orloj.dev/v1
kind: ModelEndpoint
metadata:
  name: offline
spec:
  provider: scripted
  defaultModel: echo-demo
  script:
    - tool_calls: [{name: echo, arguments: {message: hello}}]
    - content: finished
"""
    files = {"mcp.yaml": server, "tool.yaml": tool, "agent.yaml": agent, "model.yaml": endpoint}
    apply_files(repo, store, {**files, "secret.yaml": secret("key", "env: LOOP_TOKEN_SOURCE")})
    os.environ["LOOP_TOKEN_SOURCE"] = SECRET_VALUE
    try:
        claimed = claim_run(store, "echoer")
        result = AgentLoop(store, Gate(store))(claimed, threading.Event())
    finally:
        del os.environ["LOOP_TOKEN_SOURCE"]
    assert result["output"] == "finished"
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert lines[0]["env"]["LOOP_TOKEN"] == SECRET_VALUE, "the McpServer's env secret reached the server"
    [called] = [m for m in lines[1:] if m.get("method") == "tools/call"]
    assert called["params"]["arguments"] == {"message": "hello"}
    assert called["params"]["_meta"]["idempotencyKey"] == f"task:{claimed.id}/step:0/attempt:1"
    events = AuditLog(store).list_all(task_id=claimed.id)
    assert [(e.event, e.tool, e.verdict) for e in events if e.event == "decision"] == [("decision", "echo", "allow")]
    assert [e.detail["outcome"] for e in events if e.event == "tool_call"] == ["ok"]
    assert all(SECRET_VALUE not in json.dumps(e.detail) for e in events)
