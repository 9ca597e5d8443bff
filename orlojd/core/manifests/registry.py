"""Kind dispatch and per-document validation: raw mapping in, model and problems out.

``validate_object`` is the one place a parsed YAML document becomes a manifest model.
It never raises on bad input: every finding is a ``Problem`` located by path, with a
did-you-mean for unknown fields and kinds. Warnings cover what orlojd keeps but does
not act on yet, and literal secret values.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_snake

from orlojd.core.diagnostics import Path, Problem, Severity
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.base import API_VERSION, INERT, ResourceKind
from orlojd.core.manifests.extensions import McpServer, Memory
from orlojd.core.manifests.policies import AgentPolicy, AgentRole, Policy, ToolApproval, ToolPermission
from orlojd.core.manifests.systems import AgentSystem
from orlojd.core.manifests.tasks import Task, TaskSchedule, TaskWebhook, Worker
from orlojd.core.manifests.tools import ModelEndpoint, Secret, Tool

KINDS: dict[str, type[ResourceKind]] = {
    cls.model_fields["kind"].default: cls
    for cls in (
        Policy,
        ModelEndpoint,
        Secret,
        Tool,
        Agent,
        AgentSystem,
        Task,
        TaskSchedule,
        AgentPolicy,
        AgentRole,
        ToolPermission,
        ToolApproval,
        Memory,
        McpServer,
        TaskWebhook,
        Worker,
    )
}
"""Every kind orlojd loads, canonical spelling -> model."""

INERT_KINDS = frozenset({"Memory", "TaskWebhook", "Worker", "ToolApproval"})
"""Orloj kinds that load, validate and plan, but that orlojd does not act on yet."""

_BY_LOWER = {name.lower(): name for name in KINDS}


@dataclass(frozen=True, slots=True)
class Validated:
    """The outcome for one document: the model (None if invalid) and every finding."""

    obj: ResourceKind | None
    problems: tuple[Problem, ...]
    kind: str = ""
    name: str = ""


def canonical_kind(raw: object) -> str | None:
    """Kind names match case-insensitively, as in Orloj."""
    return _BY_LOWER.get(raw.lower()) if isinstance(raw, str) else None


def validate_object(doc: object) -> Validated:
    """Validate one parsed document; never raises for bad input."""
    if not isinstance(doc, dict):
        return Validated(None, (Problem(f"a manifest is a mapping, got {_type_name(doc)}"),))
    raw_kind = doc.get("kind")
    name = _raw_name(doc)
    if raw_kind is None:
        hint = "add 'kind:' (one of " + ", ".join(KINDS) + "), or list the file in .orlojignore"
        return Validated(None, (Problem(f"missing 'kind'; {hint}", ()),), "", name)
    kind = canonical_kind(raw_kind)
    if kind is None:
        return Validated(None, (Problem(_unknown("kind", str(raw_kind), list(KINDS)), ("kind",)),), "", name)
    problems: list[Problem] = []
    api_version = doc.get("apiVersion", API_VERSION)
    if api_version != API_VERSION:
        problems.append(Problem(f"unsupported apiVersion {api_version!r}; use {API_VERSION}", ("apiVersion",)))
        return Validated(None, tuple(problems), kind, name)
    body = {k: v for k, v in doc.items() if k != "status"}
    if "status" in doc:
        problems.append(Problem("'status' is written by orlojd and ignored here", ("status",), Severity.WARNING))
    body["kind"] = kind
    body.setdefault("apiVersion", API_VERSION)
    model = KINDS[kind]
    try:
        obj = model.model_validate(body)
    except ValidationError as exc:
        problems.extend(problems_from_validation(exc, model))
        return Validated(None, tuple(problems), kind, name)
    problems.extend(_warnings(obj))
    return Validated(obj, tuple(problems), kind, obj.metadata.name)


def _raw_name(doc: dict[Any, Any]) -> str:
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(name, str):
        return name
    return ""


def _type_name(value: object) -> str:
    if value is None:
        return "an empty document"
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _unknown(what: str, given: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = difflib.get_close_matches(given.lower(), list(lowered), n=1, cutoff=0.6)
        close = [lowered[c] for c in close]
    hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(choices)}"
    return f"unknown {what} {given!r}{hint}"


def _clean_loc(loc: tuple[int | str, ...]) -> Path:
    # pydantic adds type tags such as 'function-after[...]' to locations; drop them.
    return tuple(p for p in loc if isinstance(p, int) or ("[" not in p and not p.startswith("function-")))


def problems_from_validation(exc: ValidationError, model: type[BaseModel]) -> Iterator[Problem]:
    """pydantic errors as Problems: located by path, with a did-you-mean for unknown fields."""
    for error in exc.errors(include_url=False, include_input=False):
        path = _clean_loc(error["loc"])
        if error["type"] == "extra_forbidden" and path and isinstance(path[-1], str):
            choices = _fields_at(model, path[:-1])
            given = path[-1]
            if "_" in given:  # an Orloj-style snake_case typo: compare in snake_case, suggest camelCase
                by_snake = {to_snake(c): c for c in choices}
                close = difflib.get_close_matches(given, list(by_snake), n=1, cutoff=0.6)
                if close:
                    yield Problem(f"unknown field {given!r}; did you mean {by_snake[close[0]]!r}?", path)
                    continue
            yield Problem(_unknown("field", given, choices), path)
            continue
        if error["type"] == "missing" and path:
            yield Problem(f"required field {path[-1]!r} is missing", path)
            continue
        message = error["msg"]
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        yield Problem(message, path)


def _fields_at(model: type[BaseModel], path: Path) -> list[str]:
    """Field names valid at ``path`` inside ``model`` (following nested models, lists and maps)."""
    current: type[BaseModel] | None = model
    for part in path:
        if current is None:
            break
        if isinstance(part, int):
            continue
        fields = {info.alias or name: info for name, info in current.model_fields.items()}
        info = fields.get(part)
        if info is None:
            continue  # a map key (graph node, label): stay on the value model
        current = next(iter(_models_in(info.annotation)), None)
    if current is None:
        return sorted(_field_names(model))
    return sorted(info.alias or name for name, info in current.model_fields.items())


@cache
def _field_names(model: type[BaseModel]) -> frozenset[str]:
    """Every field name reachable from a model, for did-you-mean hints."""
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()

    def visit(cls: type[BaseModel]) -> None:
        if cls in seen:
            return
        seen.add(cls)
        for field_name, info in cls.model_fields.items():
            names.add(info.alias or field_name)
            for inner in _models_in(info.annotation):
                visit(inner)

    visit(model)
    return frozenset(names)


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    if get_origin(annotation) is not None or get_args(annotation):
        for arg in get_args(annotation):
            yield from _models_in(arg)


def _warnings(obj: ResourceKind) -> Iterator[Problem]:
    kind = obj.kind
    if kind in INERT_KINDS:
        yield Problem(
            f"kind {kind} is kept and planned, but orlojd does not act on it yet", ("kind",), Severity.WARNING
        )
    yield from _inert_fields(obj, ())
    if isinstance(obj, Secret) and obj.spec.is_literal:
        field = "stringData" if obj.spec.string_data is not None else "data"
        yield Problem(
            "literal secret value committed to git; move it to 'env', 'file' or 'systemdCredential'. "
            "apply refuses it unless orlojd.yaml sets secrets.allowLiteral: true",
            ("spec", field),
            Severity.WARNING,
        )


@cache
def _inert_plan(cls: type[BaseModel]) -> tuple[tuple[str, str, bool], ...]:
    """(field, alias, is_inert) for the fields of ``cls`` that are inert or can hold inert fields."""
    plan: list[tuple[str, str, bool]] = []
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get(INERT):
            plan.append((name, info.alias or name, True))
        elif any(inner is not cls and _inert_plan(inner) for inner in _models_in(info.annotation)):
            plan.append((name, info.alias or name, False))
    return tuple(plan)


def _inert_fields(model: BaseModel, path: Path) -> Iterator[Problem]:
    """Warnings for inert fields the manifest sets; walks only where such fields can be."""
    for name, alias, is_inert in _inert_plan(type(model)):
        value = getattr(model, name)
        if value is None:
            continue
        if is_inert:
            if name in model.model_fields_set:
                reason = type(model).model_fields[name].description or "kept, not acted on yet"
                yield Problem(f"field is {reason}", (*path, alias), Severity.WARNING)
        elif isinstance(value, BaseModel):
            yield from _inert_fields(value, (*path, alias))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _inert_fields(item, (*path, alias, index))
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    yield from _inert_fields(item, (*path, alias, key))
