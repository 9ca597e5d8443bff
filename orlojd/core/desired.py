"""Desired state: files (path, bytes) in, validated objects keyed by identity plus every finding out.

``load_file`` handles one file (parse, validate, digest, warnings) and is what a
cache by blob id stores. ``assemble`` joins files: duplicate identities (naming both
places) and, unless ``resolve`` is off, dangling references. Pure: no git, no disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from orlojd.core.diagnostics import Diagnostic, Problem, Severity, format_path
from orlojd.core.digest import digest_of, normalised
from orlojd.core.documents import RawDocument, SourceFile, parse_file, too_large
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.base import ResourceKind
from orlojd.core.manifests.registry import validate_object
from orlojd.core.references import Reference, check_references, key_of, references


@dataclass(frozen=True, slots=True)
class LoadedObject:
    """A valid object, its digest and the place it was declared."""

    key: ResourceKey
    obj: ResourceKind
    digest: str
    body: dict[str, Any]
    refs: tuple[Reference, ...]
    source: SourceFile
    index: int

    @property
    def file(self) -> str:
        return self.source.path

    @property
    def line(self) -> int:
        return self.source.position(self.index, ())[0]

    def locate(self, problem: Problem) -> Diagnostic:
        return locate(self.source, self.index, problem, self.key.kind, self.key.name)


@dataclass(frozen=True, slots=True)
class FileResult:
    path: str
    objects: tuple[LoadedObject, ...]
    diagnostics: tuple[Diagnostic, ...]


@dataclass
class Desired:
    """Everything a revision declares, and everything wrong with it."""

    objects: dict[ResourceKey, LoadedObject] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: int = 0

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]

    @property
    def ok(self) -> bool:
        return not self.errors


def locate(source: SourceFile, index: int, problem: Problem, kind: str, name: str) -> Diagnostic:
    line, column = source.position(index, problem.path)
    return Diagnostic(
        problem.message, source.path, line, column, kind, name, format_path(problem.path), problem.severity
    )


def _object_diagnostics(document: RawDocument) -> tuple[LoadedObject | None, list[Diagnostic]]:
    result = validate_object(document.data)
    found = [locate(document.source, document.index, p, result.kind, result.name) for p in result.problems]
    if result.obj is None:
        return None, found
    body = normalised(result.obj)
    refs = tuple(references(result.obj))
    loaded = LoadedObject(key_of(result.obj), result.obj, digest_of(body), body, refs, document.source, document.index)
    return loaded, found


def symlink_skipped(path: str) -> FileResult:
    """A symbolic link is never followed: git stores the link, not the file, so a commit and a
    working tree would disagree about what it declares."""
    message = "symbolic link not followed (git stores the link, not the file); commit the manifest itself"
    return FileResult(path, (), (Diagnostic(message, path, severity=Severity.WARNING),))


def load_file(path: str, content: bytes | None, size: int = 0) -> FileResult:
    """Parse and validate every document of one file; ``None`` content means it was too large to read."""
    if content is None:
        return FileResult(path, (), (too_large(path, size),))
    documents, diagnostics = parse_file(path, content)
    objects: list[LoadedObject] = []
    for document in documents:
        loaded, found = _object_diagnostics(document)
        diagnostics.extend(found)
        if loaded is not None:
            objects.append(loaded)
    return FileResult(path, tuple(objects), tuple(diagnostics))


def assemble(results: Iterable[FileResult], *, resolve: bool = True) -> Desired:
    """Join per-file results into one Desired; with ``resolve``, check identities and references."""
    desired = Desired()
    for result in sorted(results, key=lambda r: r.path):
        desired.files += 1
        desired.diagnostics.extend(result.diagnostics)
        for loaded in result.objects:
            if resolve and loaded.key in desired.objects:
                first = desired.objects[loaded.key]
                desired.diagnostics.append(
                    loaded.locate(
                        Problem(
                            f"{loaded.key.short} is declared twice: here and at {first.file}:{first.line}; "
                            "identity is (kind, namespace, name), so rename or remove one",
                            ("metadata", "name"),
                        )
                    )
                )
                continue
            desired.objects.setdefault(loaded.key, loaded)
    if resolve:
        objects = desired.objects
        # One flat pass finds the few objects worth a closer look (10k objects: ~2 ms).
        suspects = {
            lo.key: lo
            for lo in objects.values()
            for r in lo.refs
            if r.target not in objects or lo.key.kind == "TaskSchedule"
        }
        for loaded in suspects.values():
            models = {r.target: objects[r.target].obj for r in loaded.refs if r.target in objects}
            desired.diagnostics.extend(loaded.locate(p) for p in check_references(loaded.obj, loaded.refs, models))
        for loaded in objects.values():
            if isinstance(loaded.obj, Agent):
                desired.diagnostics.extend(loaded.locate(p) for p in ungranted_approvals(loaded.obj))
    desired.diagnostics.sort(key=lambda d: (d.file, d.line, d.column, d.severity != Severity.ERROR))
    return desired


def ungranted_approvals(agent: Agent) -> Iterator[Problem]:
    """An approval requirement no granted tool can trigger is an error: it would never fire."""
    for i in agent.ungranted_approvals():
        entry = agent.spec.governance.require_approval[i]
        yield Problem(
            f"requireApproval '{entry.access.value}: {entry.resource}' matches no permission granted under "
            f"'tools', so it would never ask for approval; grant it to the tool that makes the call, "
            f"or fix the resource name",
            ("spec", "governance", "requireApproval", i),
        )


def build_desired(files: Iterable[tuple[str, bytes | None]], *, resolve: bool = True) -> Desired:
    """Files (path, content) to a Desired, in one call."""
    return assemble((load_file(path, content) for path, content in files), resolve=resolve)
