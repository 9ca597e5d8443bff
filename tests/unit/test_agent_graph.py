"""``core/agent_graph.py``: entry nodes, order, problems, joins and the schedule of a run, on generated graphs
(hypothesis) and on Orloj's conformance blueprints (pipeline, hierarchical, loop)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CONFORMANCE
from hypothesis import given, settings
from hypothesis import strategies as st

from orlojd.core.agent_graph import (
    AgentGraph,
    Hop,
    JoinRule,
    JoinVerdict,
    Schedule,
    graph_of,
    join_verdict,
    problems,
    quorum_required,
)
from orlojd.core.manifests.registry import validate_object
from orlojd.core.manifests.systems import AgentSystem, AgentSystemSpec


def spec(
    agents: list[str], edges: dict[str, list[str]], joins: dict[str, dict[str, Any]] | None = None
) -> AgentSystemSpec:
    graph: dict[str, Any] = {}
    for node, targets in edges.items():
        graph[node] = {"edges": [{"to": t} for t in targets]}
    for node, join in (joins or {}).items():
        graph.setdefault(node, {})["join"] = join
    return AgentSystemSpec.model_validate({"agents": agents, "graph": graph})


def run(graph: AgentGraph, max_turns: int = 0, fail: frozenset[str] = frozenset()) -> tuple[Schedule, list[Hop]]:
    """Drive a schedule to its end: every node answers ``out:<node>``, the ones in ``fail`` fail."""
    schedule = Schedule(graph, max_turns)
    hops: list[Hop] = []
    while (hop := schedule.next_hop()) is not None:
        hops.append(hop)
        assert len(hops) < 1000, "a schedule must end"
        if hop.node in fail:
            schedule.failed(hop, "boom")
        else:
            schedule.succeeded(hop, f"out:{hop.node}")
    return schedule, hops


# -- strategies -------------------------------------------------------------------------------------------------------

JOIN = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["wait_for_all", "quorum"]),
        "quorum_count": st.integers(0, 5),
        "quorum_percent": st.integers(0, 100),
        "on_failure": st.sampled_from(["deadletter", "skip", "continue_partial"]),
    }
)


@st.composite
def dags(draw: st.DrawFn) -> AgentSystemSpec:
    """Acyclic: edges only go from a lower to a higher index, in shuffled declaration order."""
    n = draw(st.integers(1, 7))
    names = [f"a{i}" for i in range(n)]
    edges = {
        names[i]: draw(st.lists(st.sampled_from(names[i + 1 :]), unique=True)) if i + 1 < n else [] for i in range(n)
    }
    joins = {name: draw(JOIN) for name in names if draw(st.booleans())}
    declared = draw(st.permutations(names))
    return spec(list(declared), {k: v for k, v in edges.items() if v}, joins)


@st.composite
def any_graphs(draw: st.DrawFn) -> AgentSystemSpec:
    n = draw(st.integers(1, 6))
    names = [f"a{i}" for i in range(n)]
    edges = {name: draw(st.lists(st.sampled_from(names), unique=True, max_size=3)) for name in names}
    joins = {name: draw(JOIN) for name in names if draw(st.booleans())}
    return spec(names, {k: v for k, v in edges.items() if v}, joins)


# -- quorum -----------------------------------------------------------------------------------------------------------


@given(st.integers(0, 50), st.integers(0, 60), st.integers(0, 100))
def test_quorum_never_exceeds_expected_and_zero_means_all(expected: int, count: int, percent: int) -> None:
    required = quorum_required("quorum", expected, count, percent)
    assert 0 <= required <= expected
    if expected:
        assert required >= 1
        assert required >= min(count, expected)
        assert required * 100 >= min(expected * percent, expected * 100)
    if count == 0 and percent == 0:
        assert required == expected
    assert quorum_required("wait_for_all", expected, count, percent) == expected


def test_quorum_formula_examples() -> None:
    assert quorum_required("quorum", 3, 2, 0) == 2
    assert quorum_required("quorum", 3, 0, 50) == 2  # ceil(1.5)
    assert quorum_required("quorum", 4, 1, 50) == 2
    assert quorum_required("quorum", 3, 9, 0) == 3  # capped
    assert quorum_required("quorum", 0, 2, 50) == 0


@given(
    st.sampled_from(["wait_for_all", "quorum"]),
    st.integers(1, 6),
    st.integers(0, 6),
    st.sampled_from(["deadletter", "skip", "continue_partial"]),
    st.data(),
)
def test_a_join_verdict_is_consistent(
    mode: str, expected: int, count: int, on_failure: str, data: st.DataObject
) -> None:
    required = quorum_required(mode, expected, count, 0)
    rule = JoinRule(mode, expected, required, on_failure)  # type: ignore[arg-type]
    ok = data.draw(st.integers(0, expected))
    failed = data.draw(st.integers(0, expected - ok))
    dropped = data.draw(st.integers(0, expected - ok - failed))
    verdict = join_verdict(rule, ok, failed, dropped)
    if failed and on_failure == "deadletter":
        assert verdict is JoinVerdict.FAIL
    elif failed and on_failure == "skip":
        assert verdict is JoinVerdict.DROP
    elif ok + failed + dropped < expected:
        assert verdict is JoinVerdict.WAIT
        assert join_verdict(rule, ok, failed, dropped, settled=True) is not JoinVerdict.WAIT
    elif verdict is JoinVerdict.RUN:
        assert ok >= (required if mode == "quorum" else 1)
    else:
        assert ok < (required if mode == "quorum" else 1) or ok == 0
    if not failed and not dropped and ok == expected:
        assert verdict is JoinVerdict.RUN


# -- acyclic graphs ---------------------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(dags())
def test_every_node_of_an_acyclic_graph_runs_once_in_an_order_respecting_edges(system: AgentSystemSpec) -> None:
    graph = graph_of(system)
    assert not graph.cyclic and problems(system) == []
    assert graph.entries == tuple(a for a in system.agents if not graph.predecessors[a]) or not system.graph
    position = {a: i for i, a in enumerate(graph.order)}
    assert sorted(graph.order) == sorted(system.agents)
    for node, targets in graph.successors.items():
        for target in targets:
            assert position[node] < position[target]
    schedule, hops = run(graph)
    ran = [h.node for h in hops]
    reached = set(graph.entries) | {t for n in ran for t in graph.successors[n]}
    assert sorted(ran) == sorted(reached) and len(ran) == len(set(ran))
    seen: set[str] = set()
    for hop in hops:
        assert set(graph.predecessors[hop.node]) <= seen, "a node runs after all its upstream agents"
        assert {d.sender for d in hop.inbox} == (set(graph.predecessors[hop.node]) or {None})
        seen.add(hop.node)
    assert schedule.stopped == "done" and schedule.failure is None
    assert [h.turn for h in hops] == list(range(1, len(hops) + 1))
    output, outputs = schedule.result()
    assert set(outputs) == {n for n in ran if graph.terminal(n)}
    assert output == f"out:{hops[-1].node}" or graph.terminal(hops[-1].node) is False


@settings(max_examples=200)
@given(dags(), st.data())
def test_failures_follow_on_failure_and_a_schedule_always_ends(system: AgentSystemSpec, data: st.DataObject) -> None:
    graph = graph_of(system)
    fail = frozenset(data.draw(st.lists(st.sampled_from(list(system.agents)), unique=True)))
    schedule, hops = run(graph, fail=fail)
    ran = [h.node for h in hops]
    assert len(ran) == len(set(ran))
    for hop in hops:
        rule = graph.joins[hop.node]
        oks = [d for d in hop.inbox if d.status == "ok"]
        if hop.kickoff:
            continue
        assert oks, "a node runs only with some upstream output"
        assert not any(d.status == "failed" for d in hop.inbox) or rule.on_failure == "continue_partial"
        if rule.mode == "quorum" and any(d.status == "failed" for d in hop.inbox):
            assert len(oks) >= rule.required
    if schedule.failure is None:
        assert schedule.stopped == "done"
        for node in fail & set(ran):
            assert not graph.terminal(node)
            assert all(graph.joins[t].on_failure != "deadletter" for t in graph.successors[node])
    else:
        assert fail & set(ran)


def test_fan_out_then_a_quorum_join_by_on_failure() -> None:
    agents = ["lead", "s1", "s2", "s3", "editor"]
    edges = {"lead": ["s1", "s2", "s3"], "s1": ["editor"], "s2": ["editor"], "s3": ["editor"]}
    quorum = {"mode": "quorum", "quorum_count": 2}

    graph = graph_of(spec(agents, edges, {"editor": {**quorum, "on_failure": "continue_partial"}}))
    assert graph.joins["editor"] == JoinRule("quorum", 3, 2, "continue_partial")
    schedule, hops = run(graph, fail=frozenset({"s2"}))
    assert [h.node for h in hops] == agents and schedule.failure is None
    editor = hops[-1]
    assert [(d.sender, d.status) for d in editor.inbox] == [("s1", "ok"), ("s2", "failed"), ("s3", "ok")]
    assert [h.branch for h in hops] == ["b001", "b001.1", "b001.2", "b001.3", "b001"]
    assert schedule.result() == ("out:editor", {"editor": "out:editor"})

    schedule, hops = run(graph, fail=frozenset({"s2", "s3"}))
    assert "quorum needs 2 of 3, 1 succeeded" in (schedule.failure or "")
    assert "editor" not in [h.node for h in hops]

    graph = graph_of(spec(agents, edges, {"editor": {**quorum, "on_failure": "deadletter"}}))
    schedule, hops = run(graph, fail=frozenset({"s2"}))
    assert schedule.failure is not None and "s2 failed (boom)" in schedule.failure and "deadletter" in schedule.failure
    assert [h.node for h in hops] == ["lead", "s1", "s2"], "a deadletter failure stops the run at once"

    graph = graph_of(spec(agents, edges, {"editor": {"on_failure": "skip"}}))
    schedule, hops = run(graph, fail=frozenset({"s2"}))
    assert schedule.failure is None and "editor" not in [h.node for h in hops]


# -- cycles -----------------------------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(any_graphs(), st.integers(1, 12))
def test_a_cycle_needs_max_turns_and_a_run_never_exceeds_it(system: AgentSystemSpec, max_turns: int) -> None:
    graph = graph_of(system)
    found = problems(system, 0)
    assert any(p.field == "spec.max_turns" for p in found) == graph.cyclic
    if graph.cyclic:
        assert graph.cycle[0] == graph.cycle[-1]
        for a, b in zip(graph.cycle, graph.cycle[1:], strict=False):
            assert b in graph.successors[a]
    assert not any(p.field == "spec.max_turns" for p in problems(system, max_turns))
    schedule, hops = run(graph, max_turns)
    assert len(hops) <= max_turns
    assert schedule.stopped in ("done", "max_turns") and schedule.failure is None
    if schedule.stopped == "max_turns":
        assert len(hops) == max_turns


def test_a_two_agent_loop_takes_turns_until_max_turns_or_a_stop() -> None:
    graph = graph_of(spec(["manager", "researcher"], {"manager": ["researcher"], "researcher": ["manager"]}))
    assert graph.entries == ("manager",) and graph.cycle == ("manager", "researcher", "manager")
    assert [
        str(p)
        for p in problems(spec(["manager", "researcher"], {"manager": ["researcher"], "researcher": ["manager"]}))
    ] == [
        "spec.max_turns: the graph has a cycle (manager -> researcher -> manager); "
        "a Task running it needs spec.max_turns > 0 to bound the loop"
    ]
    schedule, hops = run(graph, 5)
    assert [h.node for h in hops] == ["manager", "researcher", "manager", "researcher", "manager"]
    assert schedule.stopped == "max_turns" and schedule.result()[0] == "out:manager"

    schedule = Schedule(graph, 5)
    first = schedule.next_hop()
    assert first is not None and first.kickoff
    assert schedule.succeeded(first, "more") == [("researcher", "b001")]
    second = schedule.next_hop()
    assert second is not None and second.inbox[0].content == "more"
    schedule.stop("stop_when")
    assert schedule.succeeded(second, "DONE") == []
    assert schedule.next_hop() is None and schedule.stopped == "stop_when"
    assert schedule.result() == ("DONE", {"manager": "more", "researcher": "DONE"})


def test_a_swarm_join_inside_a_cycle() -> None:
    agents = ["coordinator", "scout-a", "scout-b", "synthesizer"]
    edges = {
        "coordinator": ["scout-a", "scout-b", "synthesizer"],
        "scout-a": ["coordinator"],
        "scout-b": ["coordinator"],
    }
    graph = graph_of(spec(agents, edges))
    assert graph.entries == ("coordinator",) and graph.joins["coordinator"].expected == 2
    _, hops = run(graph, 8)
    assert [h.node for h in hops] == [
        "coordinator",
        "scout-a",
        "scout-b",
        "synthesizer",
        "coordinator",
        "scout-a",
        "scout-b",
        "synthesizer",
    ]
    assert sorted(d.sender or "" for d in hops[4].inbox) == ["scout-a", "scout-b"]


def test_no_graph_runs_the_first_agent_only_and_unreached_cycles_are_named() -> None:
    graph = graph_of(spec(["manager", "worker"], {}))
    assert graph.entries == ("manager",)
    assert [h.node for h in run(graph)[1]] == ["manager"]
    island = spec(["a", "b", "c"], {"a": ["b"], "c": ["c"]})
    assert graph_of(island).entries == ("a",)
    assert [p.field for p in problems(island, 3)] == ["spec.graph.c"]


# -- Orloj's conformance manifests ------------------------------------------------------------------------------------


def _system(path: Path) -> AgentSystem:
    checked = validate_object(yaml.safe_load(path.read_text()))
    assert isinstance(checked.obj, AgentSystem), checked.problems
    return checked.obj


@pytest.mark.parametrize(
    ("path", "max_turns", "entries", "order_starts"),
    [
        ("examples/blueprints/pipeline/agent-system.yaml", 0, ("bp-pipeline-planner-agent",), 3),
        ("examples/blueprints/hierarchical/agent-system.yaml", 0, ("bp-hier-manager-agent",), 6),
        ("testing/scenarios/01-pipeline/agent-system.yaml", 0, ("rt-pipeline-planner-agent",), 3),
        ("testing/scenarios/02-hierarchical/agent-system.yaml", 0, ("rt-hier-manager-agent",), 6),
        ("testing/scenarios/03-loop-max-turns/agent-system.yaml", 6, ("rt-loop-manager-agent",), 0),
        ("testing/scenarios/05-retry-deadletter/agent-system.yaml", 0, ("rt-retry-timeout-agent",), 1),
    ],
)
def test_orloj_blueprints_load_and_schedule(
    path: str, max_turns: int, entries: tuple[str, ...], order_starts: int
) -> None:
    system = _system(CONFORMANCE / path)
    graph = graph_of(system.spec)
    assert problems(system.spec, max_turns) == []
    assert graph.entries == entries
    assert graph.cyclic == (max_turns > 0)
    if max_turns:
        assert problems(system.spec, 0)[0].field == "spec.max_turns"
    schedule, hops = run(graph, max_turns)
    if not graph.cyclic:
        assert sorted(h.node for h in hops) == sorted(system.spec.agents)
        assert list(graph.order[:order_starts]) == [h.node for h in hops][:order_starts] or order_starts == 6
    else:
        assert len(hops) == max_turns and schedule.stopped == "max_turns"


def test_the_hierarchical_blueprint_editor_joins_both_branches() -> None:
    graph = graph_of(_system(CONFORMANCE / "examples/blueprints/hierarchical/agent-system.yaml").spec)
    assert graph.joins["bp-hier-editor-agent"] == JoinRule("wait_for_all", 2, 2, "deadletter")
    _, hops = run(graph)
    editor = hops[-1]
    assert editor.node == "bp-hier-editor-agent" and editor.branch == "b001"
    assert sorted(d.sender or "" for d in editor.inbox) == [
        "bp-hier-research-worker-agent",
        "bp-hier-social-worker-agent",
    ]
