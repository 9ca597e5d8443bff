"""AgentSystem: a graph of agents (pipeline, hierarchical, loop) run by one Task."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from orlojd.core.manifests.base import OrlojModel, RefName, ResourceKind, Spec


class GraphEdge(OrlojModel):
    to: str
    labels: dict[str, str] = Field(default_factory=dict)
    policy: dict[str, str] = Field(default_factory=dict)


class GraphJoin(OrlojModel):
    mode: Literal["wait_for_all", "quorum"] = "wait_for_all"
    quorum_count: Annotated[int, Field(ge=0)] = 0
    quorum_percent: Annotated[int, Field(ge=0, le=100)] = 0
    on_failure: Literal["deadletter", "skip", "continue_partial"] = "deadletter"


class GraphNode(OrlojModel):
    next: str | None = None
    edges: list[GraphEdge] = Field(default_factory=list)
    join: GraphJoin | None = None

    def targets(self) -> list[str]:
        """Outgoing edges: the union of ``next`` and ``edges[].to``, in order, without repeats."""
        out: list[str] = []
        for target in ([self.next] if self.next else []) + [e.to for e in self.edges if e.to]:
            if target not in out:
                out.append(target)
        return out


class StopWhen(OrlojModel):
    """orlojd extension: a condition on an agent's output that ends the run early (a loop's exit)."""

    output_contains: Annotated[str, Field(min_length=1, description="Stop once an agent's output contains this")]


class AgentSystemSpec(Spec):
    agents: Annotated[list[RefName], Field(min_length=1)]
    graph: dict[str, GraphNode] = Field(default_factory=dict)
    stop_when: StopWhen | None = Field(
        default=None,
        description="orlojd extension: end the run once an agent's output meets this (else at the Task's max_turns)",
    )

    @model_validator(mode="after")
    def _graph_names_agents(self) -> AgentSystemSpec:
        members = set(self.agents)
        if len(members) != len(self.agents):
            raise ValueError("an agent is listed twice in 'agents'")
        for node, spec in self.graph.items():
            if node not in members:
                raise ValueError(f"graph node {node!r} is not one of 'agents'")
            for target in spec.targets():
                if target not in members:
                    raise ValueError(f"graph edge {node!r} -> {target!r} points outside 'agents'")
        return self


class AgentSystem(ResourceKind):
    kind: Literal["AgentSystem"] = "AgentSystem"
    spec: AgentSystemSpec
