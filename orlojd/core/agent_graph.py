"""An AgentSystem's graph as data: its problems, entry nodes, order, joins, and the schedule of one run (pure).

Orloj's graph semantics (reference section 6), for the in-process runner (``engine/agent_systems.py``):

* Outgoing edges of a node: ``next`` and ``edges[].to``, deduplicated (``GraphNode.targets``).
* Entry nodes: the agents nobody points at, in ``agents`` order; no graph at all: the first agent only
  (the others are reached as tools, if at all); a graph where every agent has an upstream (fully
  cyclic): the first agent.
* ``order``: Kahn's topological order from the entry nodes (FIFO), then any agent not reached, in
  declaration order.
* Problems (``problems``), each naming the field: a cyclic graph run by a Task without ``max_turns``;
  no entry node; an agent in a cycle that no entry node reaches.
* Joins: a node with several upstream agents expects one delivery from each (``expected``: the distinct
  upstream agents an entry reaches). ``wait_for_all`` needs all of them settled; ``quorum`` needs
  ``required = max(quorum_count, ceil(expected * quorum_percent / 100))`` successes, 0 meaning all,
  capped at ``expected``. A failed upstream branch: ``deadletter`` fails the run, ``skip`` drops the
  node (and what only it feeds), ``continue_partial`` runs it with the outputs that succeeded (at
  least one; with ``quorum``, at least ``required``).

``Schedule`` is one run as a state machine, the runner doing the I/O: ``next_hop`` hands out the next
agent run (a hop: node, turn, branch, inbox), ``succeeded`` / ``failed`` report how it went, and the
schedule routes the output to every successor (fan-out), holds deliveries for joins, and ends when
nothing is left to run, when ``max_turns`` hops have run (when > 0), on ``stop``, or on a failure
(``failure``, a value). Branches run one after another, so a join is decided once every upstream
branch it expects has settled; in a cycle, a join whose missing upstreams cannot arrive any more
(nothing left to run) is decided with what arrived. Branch ids: ``b001``, ``b002`` ... per entry node;
a fan-out to k > 1 targets gives each ``<branch>.<i>``; a join runs on the common prefix of its inbox.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from orlojd.core.manifests.systems import AgentSystemSpec, GraphJoin

__all__ = [
    "AgentGraph",
    "Delivery",
    "GraphProblem",
    "Hop",
    "JoinRule",
    "JoinVerdict",
    "Schedule",
    "graph_of",
    "join_verdict",
    "problems",
    "quorum_required",
]


@dataclass(frozen=True, slots=True)
class GraphProblem:
    """Why a graph cannot run: the field at fault and what to do."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class JoinRule:
    """How a node waits for its upstream agents."""

    mode: Literal["wait_for_all", "quorum"]
    expected: int
    required: int
    on_failure: Literal["deadletter", "skip", "continue_partial"]


class JoinVerdict(StrEnum):
    WAIT = "wait"  # more upstream deliveries are due
    RUN = "run"
    DROP = "drop"  # the node's branch is dropped: it does not run
    FAIL = "fail"  # the run fails


def quorum_required(mode: str, expected: int, quorum_count: int = 0, quorum_percent: int = 0) -> int:
    """Successes a join needs: all for ``wait_for_all``; for ``quorum`` max(count, ceil(expected x percent
    / 100)), 0 meaning all, capped at ``expected``."""
    if expected <= 0:
        return 0
    if mode != "quorum":
        return expected
    percent = min(max(quorum_percent, 0), 100)
    wanted = max(quorum_count, -(-expected * percent // 100))
    return expected if wanted <= 0 else min(wanted, expected)


def join_verdict(rule: JoinRule, succeeded: int, failed: int, dropped: int, *, settled: bool = False) -> JoinVerdict:
    """What a node does with ``succeeded`` / ``failed`` / ``dropped`` upstream deliveries so far.
    ``settled``: no further delivery can arrive (the missing ones count as dropped)."""
    if failed and rule.on_failure == "deadletter":
        return JoinVerdict.FAIL
    if failed and rule.on_failure == "skip":
        return JoinVerdict.DROP
    if succeeded + failed + dropped < rule.expected and not settled:
        return JoinVerdict.WAIT
    needed = rule.required if rule.mode == "quorum" else 1
    if succeeded >= max(needed, 1):
        return JoinVerdict.RUN
    return JoinVerdict.FAIL if failed else JoinVerdict.DROP


@dataclass(frozen=True)
class AgentGraph:
    """The graph of one AgentSystem: who follows whom, where runs start, how nodes join."""

    agents: tuple[str, ...]
    successors: Mapping[str, tuple[str, ...]]
    predecessors: Mapping[str, tuple[str, ...]]
    entries: tuple[str, ...]
    order: tuple[str, ...]
    cycle: tuple[str, ...]  # one cycle (a -> b -> a as (a, b, a)); empty when acyclic
    joins: Mapping[str, JoinRule]
    unreached: tuple[str, ...]  # agents in a graph that no entry node reaches

    @property
    def cyclic(self) -> bool:
        return bool(self.cycle)

    def terminal(self, node: str) -> bool:
        return not self.successors.get(node)


def graph_of(spec: AgentSystemSpec) -> AgentGraph:
    """The graph of ``spec`` (see the module doc)."""
    agents = tuple(spec.agents)
    successors = {a: tuple(t for t in spec.graph[a].targets()) if a in spec.graph else () for a in agents}
    predecessors: dict[str, list[str]] = {a: [] for a in agents}
    for node in agents:
        for target in successors[node]:
            if target in predecessors and node not in predecessors[target]:
                predecessors[target].append(node)
    if not spec.graph:
        entries: tuple[str, ...] = agents[:1]
    else:
        entries = tuple(a for a in agents if not predecessors[a]) or agents[:1]
    reached = _reachable(entries, successors)
    joins: dict[str, JoinRule] = {}
    for node in agents:
        join = spec.graph[node].join if node in spec.graph else None
        join = join or GraphJoin()
        expected = sum(1 for p in predecessors[node] if p in reached)
        required = quorum_required(join.mode, expected, join.quorum_count, join.quorum_percent)
        joins[node] = JoinRule(join.mode, expected, required, join.on_failure)
    unreached = () if not spec.graph else tuple(a for a in agents if a not in reached)
    return AgentGraph(
        agents=agents,
        successors=successors,
        predecessors={a: tuple(p) for a, p in predecessors.items()},
        entries=entries,
        order=_kahn(agents, successors, predecessors),
        cycle=_a_cycle(agents, successors),
        joins=joins,
        unreached=unreached,
    )


def problems(spec: AgentSystemSpec, max_turns: int = 0) -> list[GraphProblem]:
    """Why a Task with ``max_turns`` cannot run this system (empty: it can)."""
    graph = graph_of(spec)
    found: list[GraphProblem] = []
    if not graph.entries:
        found.append(GraphProblem("spec.agents", "no entry node: list at least one agent"))
    if graph.cyclic and max_turns <= 0:
        path = " -> ".join(graph.cycle)
        found.append(
            GraphProblem(
                "spec.max_turns",
                f"the graph has a cycle ({path}); a Task running it needs spec.max_turns > 0 to bound the loop",
            )
        )
    for agent in graph.unreached:
        found.append(
            GraphProblem(
                f"spec.graph.{agent}",
                f"agent {agent} is in a cycle no entry node ({', '.join(graph.entries)}) reaches, so it never runs; "
                "add an edge to it from a reached agent or remove it",
            )
        )
    return found


def _reachable(entries: Sequence[str], successors: Mapping[str, Sequence[str]]) -> set[str]:
    seen = set(entries)
    todo = list(entries)
    while todo:
        for target in successors.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def _kahn(
    agents: Sequence[str], successors: Mapping[str, Sequence[str]], predecessors: Mapping[str, Sequence[str]]
) -> tuple[str, ...]:
    indegree = {a: len(predecessors[a]) for a in agents}
    queue = deque(a for a in agents if indegree[a] == 0)
    order: list[str] = []
    while queue:
        node = queue.popleft()
        order.append(node)
        for target in successors[node]:
            indegree[target] -= 1
            if indegree[target] == 0:
                queue.append(target)
    return (*order, *(a for a in agents if a not in order))


def _a_cycle(agents: Sequence[str], successors: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """One cycle of the graph (first node repeated at the end), found by an iterative DFS; () if none."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for root in agents:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        state[root] = 1
        while stack:
            node, index = stack[-1]
            targets = successors.get(node, ())
            if index == len(targets):
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            stack[-1] = (node, index + 1)
            target = targets[index]
            if state.get(target) == 1:
                return (*path[path.index(target) :], target)
            if target not in state:
                state[target] = 1
                stack.append((target, 0))
                path.append(target)
    return ()


# -- one run ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """What reached a node: an upstream output (``ok``), or news that the upstream failed or was dropped.
    ``sender`` None: the task's own input (an entry node's kickoff)."""

    sender: str | None
    branch: str
    status: Literal["ok", "failed", "dropped"] = "ok"
    content: str | None = None


@dataclass(frozen=True, slots=True)
class Hop:
    """One agent run: ``turn`` counts from 1 across the whole run; ``inbox`` holds what it joins."""

    node: str
    turn: int
    branch: str
    inbox: tuple[Delivery, ...]

    @property
    def kickoff(self) -> bool:
        return len(self.inbox) == 1 and self.inbox[0].sender is None


@dataclass
class Schedule:
    """One run of a graph (see the module doc). Not thread-safe: one runner drives it."""

    graph: AgentGraph
    max_turns: int = 0
    turns: int = 0
    stopped: str | None = None  # "max_turns", the runner's reason (stop), "done"
    failure: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)  # last output of each node that ran
    last: str | None = None  # the node that succeeded last
    last_terminal: str | None = None
    _ready: deque[tuple[str, str, tuple[Delivery, ...]]] = field(default_factory=deque)
    _inbox: dict[str, dict[str, Delivery]] = field(default_factory=dict)
    _dropped: set[str] = field(default_factory=set)  # dropped and not run since (a drop is sent once)
    _late: dict[str, set[str]] = field(default_factory=dict)  # upstream deliveries a decided join ignores

    def __post_init__(self) -> None:
        for i, entry in enumerate(self.graph.entries):
            self._ready.append((entry, f"b{i + 1:03d}", (Delivery(None, f"b{i + 1:03d}"),)))

    @property
    def finished(self) -> bool:
        return self.failure is not None or self.stopped is not None

    def next_hop(self) -> Hop | None:
        """The next agent run, or None when the run is over (see ``stopped`` and ``failure``)."""
        if self.finished:
            return None
        if not self._ready:
            self._settle()
        if not self._ready or self.finished:
            if not self.finished:
                self.stopped = "done"
            return None
        if self.max_turns > 0 and self.turns >= self.max_turns:
            self.stopped = "max_turns"
            return None
        node, branch, inbox = self._ready.popleft()
        self.turns += 1
        self._dropped.discard(node)
        return Hop(node, self.turns, branch, inbox)

    def succeeded(self, hop: Hop, output: str) -> list[tuple[str, str]]:
        """``hop`` answered ``output``: routed to every successor. Returns the handoffs made (receiver, branch)."""
        self.outputs[hop.node] = output
        self.last = hop.node
        if self.graph.terminal(hop.node):
            self.last_terminal = hop.node
        if self.finished:  # stopped (a stop condition): the output goes nowhere
            return []
        return self._send(hop.node, hop.branch, "ok", output)

    def failed(self, hop: Hop, error: str) -> None:
        """``hop`` failed for good: each successor's ``on_failure`` decides (a terminal node fails the run)."""
        if self.graph.terminal(hop.node):
            self.failure = f"agent {hop.node} failed: {error}"
            return
        self._send(hop.node, hop.branch, "failed", None, error)

    def result(self) -> tuple[str, dict[str, str]]:
        """The run's answer: the last terminal node's output (else the last output) and the outputs of the
        terminal nodes that ran, in ``agents`` order (none ran, as in a loop: every node's last output)."""
        terminal = {n: self.outputs[n] for n in self.graph.agents if n in self.outputs and self.graph.terminal(n)}
        outputs = terminal or {n: self.outputs[n] for n in self.graph.agents if n in self.outputs}
        last = self.last_terminal or self.last
        return ("" if last is None else self.outputs[last]), outputs

    def stop(self, reason: str) -> None:
        """End the run after the current hop (a stop condition met)."""
        if not self.finished:
            self.stopped = reason

    def _send(
        self, sender: str, branch: str, status: Literal["ok", "failed", "dropped"], content: str | None, error: str = ""
    ) -> list[tuple[str, str]]:
        targets = self.graph.successors[sender]
        sent: list[tuple[str, str]] = []
        for i, target in enumerate(targets):
            if self.failure is not None:
                break
            child = branch if len(targets) == 1 else f"{branch}.{i + 1}"
            if sender in self._late.get(target, ()):  # the join was decided without it: absorbed
                self._late[target].discard(sender)
                continue
            self._inbox.setdefault(target, {})[sender] = Delivery(sender, child, status, content)
            if status == "ok":
                sent.append((target, child))
            self._decide(target, settled=False, error=error)
        return sent

    def _decide(self, node: str, *, settled: bool, error: str = "") -> None:
        inbox = self._inbox.get(node, {})
        rule = self.graph.joins[node]
        rule = JoinRule(rule.mode, max(rule.expected, 1), rule.required or 1, rule.on_failure)
        counts = {s: sum(1 for d in inbox.values() if d.status == s) for s in ("ok", "failed", "dropped")}
        verdict = join_verdict(rule, counts["ok"], counts["failed"], counts["dropped"], settled=settled)
        if verdict is JoinVerdict.WAIT:
            return
        deliveries = tuple(inbox.values())
        self._inbox.pop(node, None)
        if not settled:  # decided early (skip, deadletter): the deliveries still due are absorbed on arrival
            self._late[node] = {p for p in self.graph.predecessors[node] if p not in inbox}
        if verdict is JoinVerdict.RUN:
            self._ready.append((node, _common_branch([d.branch for d in deliveries if d.status == "ok"]), deliveries))
        elif verdict is JoinVerdict.FAIL:
            failed = [d.sender or "" for d in deliveries if d.status == "failed"]
            why = f"{', '.join(failed)} failed" + (f" ({error})" if error else "") if failed else "no upstream output"
            if rule.mode == "quorum" and counts["ok"] < rule.required:
                why += f"; quorum needs {rule.required} of {rule.expected}, {counts['ok']} succeeded"
            self.failure = f"{why}; agent {node} has join.on_failure {rule.on_failure}"
        elif node not in self._dropped:
            self._dropped.add(node)
            branch = deliveries[0].branch if deliveries else "b000"
            self._send(node, branch, "dropped", None)

    def _settle(self) -> None:
        """Nothing is ready: decide the join holding the oldest deliveries with what arrived (a cycle's join
        whose missing upstreams cannot come any more)."""
        while not self._ready and self._inbox and self.failure is None:
            node = next(iter(self._inbox))
            self._decide(node, settled=True)


def _common_branch(branches: Sequence[str]) -> str:
    """The longest common dotted prefix of ``branches`` (``b001.1``, ``b001.2`` -> ``b001``), else them joined."""
    if not branches:
        return "b000"
    split = [b.split(".") for b in branches]
    common: list[str] = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return ".".join(common) if common else "+".join(dict.fromkeys(branches))
