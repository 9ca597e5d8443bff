"""The Orloj conformance corpus: 206 real manifests in Orloj's snake_case dialect.

Every file must validate on its own (no references resolved), every use-case folder
must validate as a whole, and the fields orlojd keeps but does not act on must show
as warnings, never vanish.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from orlojd.core.desired import build_desired, load_file
from orlojd.core.diagnostics import Severity
from orlojd.sources import load

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "orloj"
FILES = sorted(p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml"))
USE_CASES = sorted(p.name for p in (CORPUS / "examples" / "use-cases").iterdir() if p.is_dir())
SCENARIOS_REAL = sorted(p.name for p in (CORPUS / "testing" / "scenarios-real").iterdir() if p.is_dir())

EXPECTED_FILES = 206
EXPECTED_KINDS = Counter(
    {
        "Agent": 73,
        "Task": 29,
        "AgentSystem": 28,
        "Secret": 23,
        "ModelEndpoint": 20,
        "Tool": 11,
        "AgentRole": 4,
        "Memory": 4,
        "ToolPermission": 4,
        "TaskSchedule": 3,
        "TaskWebhook": 3,
        "McpServer": 2,
        "AgentPolicy": 1,
        "Worker": 1,
    }
)


def test_corpus_is_present(conformance_dir: Path) -> None:
    assert conformance_dir == CORPUS
    assert len(FILES) == EXPECTED_FILES
    assert len(USE_CASES) == 3


@pytest.mark.parametrize("rel", FILES)
def test_file_validates_on_its_own(rel: str) -> None:
    desired = build_desired([(rel, (CORPUS / rel).read_bytes())], resolve=False)
    assert [d.format() for d in desired.errors] == []
    assert len(desired.objects) >= 1


def test_total_object_count() -> None:
    kinds: Counter[str] = Counter()
    for rel in FILES:
        result = load_file(rel, (CORPUS / rel).read_bytes())
        kinds.update(loaded.key.kind for loaded in result.objects)
    assert sum(kinds.values()) == sum(EXPECTED_KINDS.values()) == 206
    assert kinds == EXPECTED_KINDS


def test_whole_corpus_validates_without_resolving() -> None:
    desired, _ = load(CORPUS, resolve=False)
    assert desired.errors == []
    assert desired.files == EXPECTED_FILES
    # identities repeat across the corpus's independent examples; without resolve the first is kept
    assert len(desired.objects) == 199


def test_whole_corpus_with_resolve_reports_duplicates_and_dangling_references() -> None:
    desired, _ = load(CORPUS)
    messages = [e.message for e in desired.errors]
    assert any("is declared twice" in m for m in messages)
    assert any("does not exist" in m for m in messages)


@pytest.mark.parametrize("name", USE_CASES)
def test_use_case_folder_validates(name: str) -> None:
    folder = CORPUS / "examples" / "use-cases" / name
    unresolved, _ = load(folder, resolve=False)
    assert [d.format() for d in unresolved.errors] == []
    assert unresolved.files == len(list(folder.rglob("*.yaml"))) and len(unresolved.objects) == unresolved.files
    # each use case is self-contained: it also resolves
    resolved, _ = load(folder)
    assert [d.format() for d in resolved.errors] == []


@pytest.mark.parametrize("name", SCENARIOS_REAL)
def test_self_contained_scenario_resolves(name: str) -> None:
    desired, _ = load(CORPUS / "testing" / "scenarios-real" / name)
    assert [d.format() for d in desired.errors] == []


def test_kept_but_inert_fields_and_kinds_are_warnings() -> None:
    desired, _ = load(CORPUS, resolve=False)
    assert all(w.severity is Severity.WARNING for w in desired.warnings)
    by_field = Counter((w.kind, w.field) for w in desired.warnings)
    for expected in [
        ("Agent", "spec.memory"),
        ("Task", "spec.messageRetry"),
        ("Tool", "spec.runtime.isolationMode"),
        ("Memory", "kind"),
        ("TaskWebhook", "kind"),
        ("Worker", "kind"),
        ("Secret", "spec.stringData"),
    ]:
        assert by_field[expected] >= 1, f"no warning for {expected}"
    assert by_field[("McpServer", "kind")] == 0, "McpServer is acted on (type: mcp tools), not kept inert"
    # every Memory object in the corpus is reported, none dropped
    memories = sum(
        1 for rel in FILES for o in load_file(rel, (CORPUS / rel).read_bytes()).objects if o.key.kind == "Memory"
    )
    memory_files = {w.file for w in desired.warnings if w.kind == "Memory"}
    assert memories == EXPECTED_KINDS["Memory"] == len(memory_files)


def test_inert_fields_are_kept_in_the_body() -> None:
    rel = "examples/resources/tasks/manager_research_loop_task.yaml"
    result = load_file(rel, (CORPUS / rel).read_bytes())
    [loaded] = result.objects
    assert loaded.body["spec"]["messageRetry"]["maxAttempts"] == 2
    assert loaded.body["spec"]["messageRetry"]["backoff"] == "250ms"
    assert [d.field for d in result.diagnostics] == ["spec.messageRetry"]
