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

from pydantic import Field, PlainSerializer, SecretStr, model_validator

from orlojd.core.durations import Duration
from orlojd.core.manifests.agents import Jitter
from orlojd.core.manifests.base import Access, OrlojModel, PermissionEntry, RefName, ResourceKind, Spec, inert


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


class ToolSpec(Spec):
    """A callable tool and the (access, resource) pairs every call to it needs."""

    type: Literal["http", "external", "grpc", "webhook-callback", "queue", "mcp", "wasm", "builtin", "agent"] = "http"
    endpoint: str | None = None
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    requires: list[PermissionEntry] = Field(
        default_factory=list, description="(access, resource) pairs a call needs, e.g. '- read: docs'"
    )
    capabilities: list[str] = Field(default_factory=list)
    operation_classes: list[Access] = Field(default_factory=list)
    risk_level: RiskLevel = RiskLevel.LOW
    runtime: ToolRuntime = Field(default_factory=ToolRuntime)
    auth: ToolAuth | None = None
    agent_ref: RefName | None = Field(
        default=None, description="For type 'agent': the Agent this tool delegates to (agent as a tool)"
    )
    mcp_server_ref: RefName | None = inert("Orloj MCP server link; kept, not used yet", default=None)
    mcp_tool_name: str | None = inert("Orloj MCP tool name; kept, not used yet", default=None)

    @model_validator(mode="after")
    def _type_needs(self) -> ToolSpec:
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


class ModelEndpointSpec(Spec):
    """Where a model is served. ``scripted`` is the offline model used by the demo and tests."""

    provider: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] = "openai"
    base_url: str | None = None
    default_model: Annotated[str, Field(min_length=1)]
    options: dict[str, str] = Field(default_factory=dict)
    auth: EndpointAuth | None = None

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
