"""Tool, ModelEndpoint and Secret: what agents call, and the credentials they call it with.

A Tool declares the (access, resource) pairs one call needs (``requires``); the
governance gate checks them against the calling agent's grant. A Secret is a
reference (env, file, systemd credential); a literal value is accepted by validate
with a loud warning and refused by apply unless orlojd.yaml allows it. Secret values
never enter a digest, a log line, an error or a plan: only their sha256 does.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PlainSerializer, SecretStr, field_validator, model_validator

from orlojd.core.durations import Duration
from orlojd.core.manifests.agents import Backoff, Jitter, RetryPolicy
from orlojd.core.manifests.base import Access, OrlojModel, PermissionEntry, RefName, ResourceKind, Spec, inert
from orlojd.core.tool_templates import template_names


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ToolRetry(OrlojModel):
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 1
    backoff: Duration = "0s"
    max_backoff: Duration = "30s"
    jitter: Jitter = Jitter.NONE


class ToolRuntime(OrlojModel):
    timeout: Duration = "30s"
    isolation_mode: Literal["none", "sandboxed", "container", "wasm"] | None = inert(
        "Orloj isolation backend; kept, not provided by orlojd yet", default=None
    )
    retry: ToolRetry = Field(default_factory=ToolRetry)


class ToolAuth(OrlojModel):
    profile: Literal["bearer", "api_key_header", "basic", "oauth2_client_credentials"] | None = None
    secret_ref: RefName | None = None
    header_name: str | None = None
    token_url: str | None = None
    scopes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _profile_needs(self) -> ToolAuth:
        if self.profile is not None and self.secret_ref is None:
            raise ValueError(f"auth profile {self.profile!r} needs 'secretRef'")
        if self.profile == "api_key_header" and not self.header_name:
            raise ValueError("auth profile 'api_key_header' needs 'headerName'")
        if self.profile == "oauth2_client_credentials" and not self.token_url:
            raise ValueError("auth profile 'oauth2_client_credentials' needs 'tokenUrl'")
        return self


_DEFAULT_PORTS = {"http": 80, "https": 443}


class ToolHttp(OrlojModel):
    """One HTTP request per call: fixed method, URL template over the arguments, only the listed hosts."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: Annotated[str, Field(min_length=1)] = Field(
        description="URL template: '{name}' placeholders are filled (URL-quoted) from the call's arguments; "
        "scheme and host must be literal"
    )
    allowed_hosts: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="Hosts a call may reach: 'host' (the scheme's default port) or 'host:port'; "
        "empty means only the url's own host",
    )
    headers: dict[str, str] = Field(default_factory=dict)
    body: Literal["json", "none"] = Field(
        default="json", description="json: the arguments not used in the url, as a JSON object; none: no body"
    )
    max_response_bytes: Annotated[int, Field(ge=1)] = 1_000_000

    @field_validator("method", mode="before")
    @classmethod
    def _upper_method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _url_host_allowed(self) -> ToolHttp:
        template_names(self.url)
        scheme, sep, rest = self.url.partition("://")
        if not sep or scheme.lower() not in _DEFAULT_PORTS:
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        if "{" in netloc or "}" in netloc:
            raise ValueError(f"url {self.url!r}: the host must be literal, not a placeholder")
        parts = urlsplit(self.url)
        try:
            host, port = (parts.hostname or "").lower(), parts.port
        except ValueError as exc:
            raise ValueError(f"url {self.url!r}: {exc}") from None
        if not host:
            raise ValueError(f"url {self.url!r} has no host")
        if self.allowed_hosts:
            port = port or _DEFAULT_PORTS[scheme.lower()]
            wanted = {f"{host}:{port}"} | ({host} if port == _DEFAULT_PORTS[scheme.lower()] else set())
            if not any(entry.strip().lower() in wanted for entry in self.allowed_hosts):
                shown = host if parts.port is None else f"{host}:{parts.port}"
                raise ValueError(
                    f"url host {shown!r} is not in allowedHosts {self.allowed_hosts}; "
                    "list it there (as 'host:port' for a non-default port) or change the url"
                )
        return self

    @property
    def hosts(self) -> tuple[str, ...]:
        """The hosts a call may reach: ``allowedHosts``, else the url's own host (``host:port`` if it names a port)."""
        if self.allowed_hosts:
            return tuple(self.allowed_hosts)
        parts = urlsplit(self.url)
        host = (parts.hostname or "").lower()
        return (host if parts.port is None else f"{host}:{parts.port}",)


class ToolCommand(OrlojModel):
    """One process per call, never a shell: each argv element a template rendered to exactly one argument."""

    argv: list[str] = Field(
        min_length=1,
        description="Program and arguments; '{name}' placeholders are filled from the call's arguments, "
        "each element rendered to exactly one argument; argv[0] must be literal",
    )
    cwd: Annotated[str, Field(min_length=1)] | None = Field(default=None, description="Working directory")
    env_allow: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        default_factory=list,
        description="Environment variables passed through (PATH only if listed); nothing else is inherited",
    )
    max_output_bytes: Annotated[int, Field(ge=1)] = 1_000_000

    @field_validator("argv")
    @classmethod
    def _literal_program(cls, argv: list[str]) -> list[str]:
        for element in argv:
            template_names(element)
        if not argv[0]:
            raise ValueError("argv[0] must name a program")
        if template_names(argv[0]):
            raise ValueError(
                f"argv[0] {argv[0]!r} must be literal, without a placeholder: the program is not chosen by arguments"
            )
        return argv


class ToolPython(OrlojModel):
    """A Python function called as ``function(arguments, idempotency_key)``."""

    entry_point: Annotated[str, Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")] = (
        Field(description="'package.module:function' (or 'package.module:object.method')")
    )
    max_output_bytes: Annotated[int, Field(ge=1)] = 1_000_000


_EXECUTOR_TYPES = {"http": "http", "command": "command", "python": "python"}


class ToolSpec(Spec):
    """A callable tool and the (access, resource) pairs every call to it needs."""

    type: Literal[
        "http", "external", "grpc", "webhook-callback", "queue", "mcp", "wasm", "builtin", "agent", "command", "python"
    ] = "http"
    endpoint: str | None = None
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    requires: list[PermissionEntry] = Field(
        default_factory=list,
        description="(access, resource) pairs a call needs, e.g. '- read: docs'. A resource may be a template "
        "over the call's arguments ('- write: \"repo:{repo}\"'), rendered per call before the gate checks it",
    )
    capabilities: list[str] = Field(default_factory=list)
    operation_classes: list[Access] = Field(default_factory=list)
    risk_level: RiskLevel = RiskLevel.LOW
    runtime: ToolRuntime = Field(default_factory=ToolRuntime)
    auth: ToolAuth | None = None
    agent_ref: RefName | None = Field(
        default=None, description="For type 'agent': the Agent this tool delegates to (agent as a tool)"
    )
    mcp_server_ref: RefName | None = Field(
        default=None, description="For type 'mcp': the McpServer (same namespace) that serves this tool"
    )
    mcp_tool_name: str | None = Field(default=None, description="For type 'mcp': the tool's name on that MCP server")
    http: ToolHttp | None = Field(default=None, description="For type 'http': the request a call makes")
    command: ToolCommand | None = Field(default=None, description="For type 'command': the process a call runs")
    python: ToolPython | None = Field(default=None, description="For type 'python': the function a call runs")

    @model_validator(mode="after")
    def _type_needs(self) -> ToolSpec:
        blocks = [name for name in _EXECUTOR_TYPES if getattr(self, name) is not None]
        if len(blocks) > 1:
            raise ValueError(f"a tool has at most one of http, command, python; found {', '.join(blocks)}")
        for block in blocks:
            if self.type != _EXECUTOR_TYPES[block]:
                raise ValueError(f"'{block}' goes with type '{_EXECUTOR_TYPES[block]}', not type '{self.type}'")
        for kind in ("command", "python"):
            if self.type == kind and kind not in blocks:
                raise ValueError(f"a tool of type '{kind}' needs '{kind}'")
        if self.http is not None and self.endpoint:
            raise ValueError("'endpoint' and 'http' both given; put the URL in 'http.url' only")
        if self.type == "mcp" and not (self.mcp_server_ref and self.mcp_tool_name):
            raise ValueError("a tool of type 'mcp' needs 'mcpServerRef' and 'mcpToolName'")
        if (self.type == "agent") != (self.agent_ref is not None):
            raise ValueError("'agentRef' goes with type 'agent', and a tool of type 'agent' needs 'agentRef'")
        return self


class Tool(ResourceKind):
    kind: Literal["Tool"] = "Tool"
    spec: ToolSpec


class EndpointAuth(OrlojModel):
    secret_ref: RefName


class ModelRetry(RetryPolicy):
    """A model call's retries on a transient provider error: at most ``maxAttempts`` calls, capped exponential
    backoff, 1s doubling up to 30s unless given. ``backoff: 2s`` is ``backoff.initial``; ``maxBackoff`` (as in a
    Tool's ``runtime.retry``) is ``backoff.max``."""

    backoff: Backoff = Field(default_factory=lambda: Backoff(initial="1s", max="30s"))
    max_backoff: Duration | None = Field(default=None, description="Same as backoff.max (a Tool retry's spelling)")

    @model_validator(mode="before")
    @classmethod
    def _model_backoff(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        cap = data.get("maxBackoff")
        backoff = data.get("backoff")
        if isinstance(backoff, str | int | float):
            backoff = {"initial": backoff}
        if isinstance(backoff, dict) or (backoff is None and cap is not None):
            backoff = dict(backoff or {})
            if cap is not None and "max" in backoff:
                raise ValueError("give 'maxBackoff' or 'backoff.max', not both")
            backoff.setdefault("max", "30s" if cap is None else cap)
            data["backoff"] = backoff
        return data


class ModelEndpointSpec(Spec):
    """Where a model is served. ``scripted`` is the offline model used by the demo and tests."""

    provider: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] = "openai"
    base_url: str | None = None
    default_model: Annotated[str, Field(min_length=1)]
    options: dict[str, str] = Field(default_factory=dict)
    auth: EndpointAuth | None = None
    timeout: Duration = Field(default="120s", description="How long one model call may take")
    retry: ModelRetry = Field(
        default_factory=ModelRetry,
        description="Attempts on a transient provider error (rate limit, 5xx, connection, timeout), with capped "
        "exponential backoff (1s doubling up to 30s unless given); a Retry-After longer than backoff.max (or "
        "maxBackoff) moves on to the fallbacks instead of waiting",
    )
    fallbacks: list[RefName] = Field(
        default_factory=list,
        description="Other ModelEndpoints tried in order when this one still fails transiently after its retries; "
        "each call to one passes the governance gate for its own model",
    )
    script: list[dict[str, Any]] | None = Field(
        default=None,
        description="For provider 'scripted': its replies in order, reply N after N assistant turns; each "
        "{content, tool_calls: [{name, arguments}], usage: {prompt, completion}}. Past the last: 'done'",
    )

    @model_validator(mode="before")
    @classmethod
    def _lower_provider(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("provider"), str):
            data = {**data, "provider": data["provider"].strip().lower()}
        return data

    @model_validator(mode="after")
    def _compatible_needs_url(self) -> ModelEndpointSpec:
        if self.provider == "openai-compatible" and not self.base_url:
            raise ValueError("provider 'openai-compatible' needs 'baseUrl'")
        if self.script is not None:
            if self.provider != "scripted":
                raise ValueError(f"'script' goes with provider 'scripted', not {self.provider!r}")
            from orlojd.adapters.scripted_model import load_script  # pure parsing; litellm is not imported

            load_script({"turns": self.script})  # a ValueError names the turn and the field
        return self


class ModelEndpoint(ResourceKind):
    kind: Literal["ModelEndpoint"] = "ModelEndpoint"
    spec: ModelEndpointSpec


def _fingerprint(value: SecretStr) -> str:
    return "sha256:" + hashlib.sha256(value.get_secret_value().encode()).hexdigest()


SecretValue = Annotated[SecretStr, PlainSerializer(_fingerprint, return_type=str)]


class SecretSpec(Spec):
    """Exactly one source: env, file, systemdCredential, or (discouraged) a literal value."""

    env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    file: Annotated[str, Field(min_length=1)] | None = None
    systemd_credential: Annotated[str, Field(min_length=1)] | None = None
    string_data: dict[str, SecretValue] | None = Field(
        default=None, description="Literal value in git: refused by apply unless orlojd.yaml allows it"
    )
    data: dict[str, SecretValue] | None = Field(
        default=None, description="Literal base64 value in git: refused by apply unless allowed"
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SecretSpec:
        sources = [
            name
            for name in ("env", "file", "systemd_credential", "string_data", "data")
            if getattr(self, name) is not None
        ]
        if len(sources) != 1:
            raise ValueError(
                "a Secret needs exactly one of env, file, systemdCredential (or a literal stringData); "
                f"found {len(sources)}"
            )
        return self

    @property
    def is_literal(self) -> bool:
        return self.string_data is not None or self.data is not None


class Secret(ResourceKind):
    kind: Literal["Secret"] = "Secret"
    spec: SecretSpec
