"""References between objects: which object names which, and whether the target exists.

``references`` lists the outgoing references of one object (kind, target key, field
path); ``check_references`` reports dangling ones. The plan orders apply stages and
detects cycles from the same list, so there is one definition of "refers to".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from orlojd.core.diagnostics import Path, Problem
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.base import ResourceKind, split_ref
from orlojd.core.manifests.extensions import McpServer, Memory
from orlojd.core.manifests.policies import ToolApproval, ToolPermission
from orlojd.core.manifests.systems import AgentSystem
from orlojd.core.manifests.tasks import Task, TaskSchedule, TaskWebhook
from orlojd.core.manifests.tools import ModelEndpoint, Tool

BUILTIN_TOOL_PREFIXES = ("memory.",)
"""Tool names provided by the runtime itself (Orloj injects memory.read, memory.write...)."""
MCP_TOOL_SEPARATOR = "--"
"""Orloj names the tools an McpServer generates '<server>--<tool>'."""


@dataclass(frozen=True, slots=True)
class Reference:
    source: ResourceKey
    target: ResourceKey
    path: Path


def key_of(obj: ResourceKind) -> ResourceKey:
    return ResourceKey(obj.kind, obj.metadata.namespace, obj.metadata.name)


def references(obj: ResourceKind) -> Iterator[Reference]:
    """Every reference ``obj`` makes, in field order."""
    source = key_of(obj)
    namespace = obj.metadata.namespace

    def ref(kind: str, value: str | None, *path: str | int) -> Iterator[Reference]:
        if value:
            target_ns, name = split_ref(value, namespace)
            yield Reference(source, ResourceKey(kind, target_ns, name), ("spec", *path))

    if isinstance(obj, Agent):
        yield from ref("ModelEndpoint", obj.spec.model_ref, "modelRef")
        for i, grant in enumerate(obj.spec.tools):
            if grant.name.startswith(BUILTIN_TOOL_PREFIXES):
                continue
            if MCP_TOOL_SEPARATOR in grant.name:
                # Orloj's McpServer generates its tools as '<server>--<tool>': depend on the server.
                server = grant.name.split(MCP_TOOL_SEPARATOR, 1)[0]
                yield from ref("McpServer", server, "tools", i, "name")
            else:
                yield from ref("Tool", grant.name, "tools", i, "name")
        for i, role in enumerate(obj.spec.roles):
            yield from ref("AgentRole", role, "roles", i)
        if obj.spec.memory is not None:
            yield from ref("Memory", obj.spec.memory.ref, "memory", "ref")
    elif isinstance(obj, Tool):
        if obj.spec.auth is not None:
            yield from ref("Secret", obj.spec.auth.secret_ref, "auth", "secretRef")
        yield from ref("McpServer", obj.spec.mcp_server_ref, "mcpServerRef")
        yield from ref("Agent", obj.spec.agent_ref, "agentRef")
    elif isinstance(obj, ModelEndpoint):
        for i, fallback in enumerate(obj.spec.fallbacks):
            yield from ref("ModelEndpoint", fallback, "fallbacks", i)
        if obj.spec.auth is not None:
            yield from ref("Secret", obj.spec.auth.secret_ref, "auth", "secretRef")
    elif isinstance(obj, AgentSystem):
        for i, agent in enumerate(obj.spec.agents):
            yield from ref("Agent", agent, "agents", i)
    elif isinstance(obj, Task):
        yield from ref("Agent", obj.spec.agent, "agent")
        yield from ref("AgentSystem", obj.spec.system, "system")
    elif isinstance(obj, TaskSchedule):
        yield from ref("Task", obj.spec.task_ref, "taskRef")
    elif isinstance(obj, TaskWebhook):
        yield from ref("Task", obj.spec.task_ref, "taskRef")
        yield from ref("Secret", obj.spec.auth.secret_ref, "auth", "secretRef")
    elif isinstance(obj, ToolPermission):
        yield from ref("Tool", obj.spec.tool_ref, "toolRef")
    elif isinstance(obj, ToolApproval):
        yield from ref("Task", obj.spec.task_ref, "taskRef")
    elif isinstance(obj, Memory):
        if obj.spec.auth is not None:
            yield from ref("Secret", obj.spec.auth.secret_ref, "auth", "secretRef")
    elif isinstance(obj, McpServer):
        for i, env in enumerate(obj.spec.env):
            yield from ref("Secret", env.secret_ref, "env", i, "secretRef")
        if obj.spec.auth is not None:
            yield from ref("Secret", obj.spec.auth.secret_ref, "auth", "secretRef")


def check_references(
    obj: ResourceKind, refs: Iterable[Reference], objects: Mapping[ResourceKey, ResourceKind]
) -> Iterator[Problem]:
    """Dangling references among ``refs`` (those of ``obj``), and references to the wrong sort of object."""
    for reference in refs:
        target = objects.get(reference.target)
        if target is None:
            where = (
                ""
                if reference.target.namespace == obj.metadata.namespace
                else (f" in namespace {reference.target.namespace!r}")
            )
            yield Problem(
                f"{reference.target.kind} {reference.target.name!r}{where} does not exist; "
                f"add it to the repository or fix the name",
                reference.path,
            )
        elif isinstance(obj, TaskSchedule) and isinstance(target, Task) and target.spec.mode != "template":
            yield Problem(
                f"Task {target.metadata.name!r} has mode 'run'; a schedule needs a task with mode: template",
                reference.path,
            )
