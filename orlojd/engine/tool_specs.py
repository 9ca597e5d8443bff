"""Which executor runs a Tool manifest: the manifest mapped onto ``tool_executors``' config, secrets resolved.

This module owns that mapping, nothing else:

* ``default_tools(tool)`` (pure, no secrets): the ``http``, ``command`` or ``python`` block as an ``HttpTool``,
  ``CommandTool`` or ``PythonTool`` (an ``http`` block with no ``allowedHosts`` may reach only its URL's own
  host); ``type: http`` with only an ``endpoint`` is a POST of the arguments as JSON to that endpoint, its
  host the only one allowed; anything else has no executor (None).
* ``ToolResolver(store, secrets)``: what the agent loop uses. ``default_tools`` plus

  - ``spec.auth`` on an http tool, as a header built from the Secret (``auth_headers``): ``bearer``
    (``Authorization: Bearer <value>``, the default profile), ``api_key_header`` (``<headerName>: <value>``),
    ``basic`` (the value is ``user:password``), ``oauth2_client_credentials`` (the value is
    ``client_id:client_secret``; a token from ``tokenUrl``, cached until a minute before it expires);
  - ``type: mcp``: the applied ``McpServer`` named by ``mcpServerRef`` (the Tool's namespace unless the
    ref names one), its env and auth Secrets resolved (``engine/mcp_tools.py``).

  Anything it cannot resolve (a Secret not applied or not readable, a server not applied) is a ``ValueError``
  naming the object and what to do; the agent loop tells the model and records it, and nothing runs.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from orlojd.adapters.secrets import SecretResolver
from orlojd.adapters.store import Store
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.base import split_ref
from orlojd.core.manifests.extensions import McpServer
from orlojd.core.manifests.registry import validate_object
from orlojd.core.manifests.tools import Tool, ToolAuth
from orlojd.engine.mcp_tools import resolve_mcp_tool
from orlojd.engine.tool_executors import CommandTool, HttpTool, PythonTool, ToolSpec

__all__ = ["ToolMapper", "ToolResolver", "auth_headers", "default_tools"]

ToolMapper = Callable[[Tool], ToolSpec | None]
TOKEN_TIMEOUT = 10.0  # seconds an OAuth2 token request may take


def default_tools(tool: Tool) -> ToolSpec | None:
    """The executor of a Tool manifest without secrets or other objects (see the module doc)."""
    spec = tool.spec
    if spec.http is not None:
        return HttpTool(
            method=spec.http.method,
            url=spec.http.url,
            allowed_hosts=spec.http.hosts,
            headers=dict(spec.http.headers),
            body=spec.http.body,
            max_response_bytes=spec.http.max_response_bytes,
        )
    if spec.command is not None:
        return CommandTool(
            argv=tuple(spec.command.argv),
            cwd=Path(spec.command.cwd) if spec.command.cwd is not None else None,
            env_allow=tuple(spec.command.env_allow),
            max_output_bytes=spec.command.max_output_bytes,
        )
    if spec.python is not None:
        return PythonTool(entry_point=spec.python.entry_point, max_output_bytes=spec.python.max_output_bytes)
    if spec.type != "http" or not spec.endpoint:
        return None
    parts = urlsplit(spec.endpoint)
    host = (parts.hostname or "").lower()
    if not host:
        return None
    allowed = host if parts.port is None else f"{host}:{parts.port}"
    return HttpTool(method="POST", url=spec.endpoint, allowed_hosts=(allowed,))


class _Tokens:
    """OAuth2 client-credentials tokens by (token URL, client id), until a minute before they expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str, str], tuple[str, float]] = {}

    def token(self, url: str, credentials: str, scopes: list[str]) -> str:
        client_id, _, client_secret = credentials.partition(":")
        if not client_secret:
            raise ValueError("the Secret of an oauth2_client_credentials profile must be 'client_id:client_secret'")
        key = (url, client_id, " ".join(scopes))
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret}
        if scopes:
            form["scope"] = " ".join(scopes)
        request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy from the environment
        try:
            with opener.open(request, timeout=TOKEN_TIMEOUT) as response:
                answer = json.loads(response.read(1_000_000))
        except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
            raise ValueError(f"token request to {url} failed: {exc}") from None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise ValueError(f"token response of {url} has no access_token")
        lifetime = float(answer.get("expires_in") or 300)
        with self._lock:
            self._cache[key] = (token, time.monotonic() + max(lifetime - 60, 0))
        return token


_TOKENS = _Tokens()


def auth_headers(auth: ToolAuth, secret: str) -> dict[str, str]:
    """The header an http tool's ``spec.auth`` adds to every request, from the Secret's value."""
    profile = auth.profile or "bearer"
    if profile == "bearer":
        return {"Authorization": f"Bearer {secret}"}
    if profile == "api_key_header":
        assert auth.header_name is not None  # the manifest requires it
        return {auth.header_name: secret}
    if profile == "basic":
        return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    assert auth.token_url is not None  # oauth2_client_credentials: the manifest requires it
    return {"Authorization": f"Bearer {_TOKENS.token(auth.token_url, secret, auth.scopes)}"}


class ToolResolver:
    """The executor of an applied Tool, its secrets and server resolved now (see the module doc)."""

    def __init__(self, store: Store, secrets: SecretResolver | None = None) -> None:
        self.store = store
        self.secrets = secrets or SecretResolver(store)

    def __call__(self, tool: Tool) -> ToolSpec | None:
        namespace = tool.metadata.namespace
        if tool.spec.type == "mcp":
            return self._mcp(tool)
        spec = default_tools(tool)
        auth = tool.spec.auth
        if not isinstance(spec, HttpTool) or auth is None or auth.secret_ref is None:
            return spec
        try:
            headers = auth_headers(auth, self.secrets(auth.secret_ref, namespace))
        except ValueError as exc:
            raise ValueError(f"tool {tool.metadata.name}: auth: {exc}") from None
        return HttpTool(
            method=spec.method,
            url=spec.url,
            allowed_hosts=spec.allowed_hosts,
            headers={**spec.headers, **headers},
            body=spec.body,
            max_response_bytes=spec.max_response_bytes,
        )

    def _mcp(self, tool: Tool) -> ToolSpec:
        assert tool.spec.mcp_server_ref is not None  # the manifest requires it for type mcp
        key = ResourceKey("McpServer", *split_ref(tool.spec.mcp_server_ref, tool.metadata.namespace))
        body = self.store.inventory_bodies_some(keys=[key]).get(key)
        if body is None:
            raise ValueError(f"tool {tool.metadata.name}: McpServer {key.short} is not applied; add it to git")
        checked = validate_object(body)
        if not isinstance(checked.obj, McpServer):
            raise ValueError(f"tool {tool.metadata.name}: applied McpServer {key.short} no longer validates")
        return resolve_mcp_tool(tool, checked.obj, lambda ref: self.secrets(ref, key.namespace))
