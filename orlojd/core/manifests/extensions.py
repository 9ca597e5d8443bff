"""Orloj's Memory and McpServer kinds.

McpServer is the server a Tool of ``type: mcp`` calls (``engine/mcp_tools.py``). Memory is kept but not
acted on yet: it validates (so a repository written for Orloj loads whole), is digested and planned like
any object, and validate reports it as a warning.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from orlojd.core.durations import Duration
from orlojd.core.manifests.base import OrlojModel, RefName, ResourceKind, Spec


class SecretAuth(OrlojModel):
    secret_ref: RefName | None = None
    profile: Literal["bearer", "api_key_header"] = "bearer"
    header_name: str | None = None


class MemorySpec(Spec):
    type: str | None = None
    provider: str = "in-memory"
    embedding_model: str | None = None
    endpoint: str | None = None
    auth: SecretAuth | None = None


class Memory(ResourceKind):
    kind: Literal["Memory"] = "Memory"
    spec: MemorySpec


class McpEnv(OrlojModel):
    name: str
    value: str | None = None
    secret_ref: RefName | None = None

    @model_validator(mode="after")
    def _one_source(self) -> McpEnv:
        if self.value is not None and self.secret_ref is not None:
            raise ValueError("'value' and 'secretRef' are mutually exclusive")
        return self


class ToolFilter(OrlojModel):
    include: list[str] = Field(default_factory=list)


class Reconnect(OrlojModel):
    max_attempts: Annotated[int, Field(ge=0)] = 3
    backoff: Duration = "2s"


class McpServerSpec(Spec):
    transport: Literal["stdio", "http"]
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: list[McpEnv] = Field(default_factory=list)
    endpoint: str | None = None
    auth: SecretAuth | None = None
    tool_filter: ToolFilter = Field(default_factory=ToolFilter)
    reconnect: Reconnect = Field(default_factory=Reconnect)

    @model_validator(mode="after")
    def _transport_needs(self) -> McpServerSpec:
        if self.transport == "stdio" and not self.command:
            raise ValueError("transport 'stdio' needs 'command'")
        if self.transport == "http" and not self.endpoint:
            raise ValueError("transport 'http' needs 'endpoint'")
        return self


class McpServer(ResourceKind):
    kind: Literal["McpServer"] = "McpServer"
    spec: McpServerSpec
