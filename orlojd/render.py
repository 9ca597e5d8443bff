"""One plan, three renderings: terminal text, markdown for a pull-request comment, JSON.

Pure: takes a ``PlanReport`` and returns strings. Secret values never reach a
renderer (bodies carry only their sha256). The JSON form is versioned: see
``docs/plan-json.md``; ``format_version`` changes only when a key changes meaning.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orlojd.core.governance_diff import GovernanceChange
from orlojd.core.plan import Action, Change, FieldChange, Plan

FORMAT_VERSION = 1
MARKDOWN_PART_LIMIT = 60_000
PART_MARKER = "<!-- orlojd-plan part {n}/{total} -->"

_SYMBOL = {Action.CREATED: "+", Action.CONFIGURED: "~", Action.DELETED: "-", Action.SKIPPED: "#", Action.UNCHANGED: "="}
_COLOUR = {Action.CREATED: "32", Action.CONFIGURED: "33", Action.DELETED: "31", Action.SKIPPED: "36"}


@dataclass(frozen=True)
class PlanReport:
    """A plan with its context: which revisions, which inventory, and the governance diff."""

    plan: Plan
    governance: tuple[GovernanceChange, ...]
    base: str | None
    head: str
    mode: str = "inventory"
    fingerprint: str | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def widening(self) -> int:
        return sum(1 for g in self.governance if g.widening)

    @property
    def exit_code(self) -> int:
        """Terraform's detailed exit codes plus 3: 0 none, 2 changes, 3 widening, 1 error."""
        if self.plan.errors:
            return 1
        if self.widening:
            return 3
        return 2 if self.plan.has_changes or self.governance else 0


def _value(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 200 else text[:197] + "..."


def _field_line(change: FieldChange) -> str:
    if change.op == "added":
        return f"+ {change.path}: {_value(change.new)}"
    if change.op == "removed":
        return f"- {change.path}: {_value(change.old)}"
    return f"~ {change.path}: {_value(change.old)} -> {_value(change.new)}"


def closing_line(report: PlanReport) -> str:
    s = report.plan.summary
    widened = report.widening
    noun = "permission" if widened == 1 else "permissions"
    return (
        f"Plan: {s['create']} to create, {s['update']} to update, {s['delete']} to delete; "
        f"governance: {widened} {noun} widened"
    )


def _governance_lines(report: PlanReport) -> list[str]:
    lines = []
    for g in report.governance:
        who = g.agent or "policy"
        mark = "! " if g.widening else "  "
        pending = "policy change pending: " if g.pending else ""
        tail = "  (widening)" if g.widening else ""
        lines.append(f"{mark}{who}: {pending}{g.change}{tail}")
    return lines


def render_text(report: PlanReport, colour: bool = False, show_unchanged: bool = False) -> str:
    def paint(code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if colour else text

    base = report.base[:12] if report.base else "(nothing applied)"
    out = [f"orlojd plan: {base} -> {report.head[:12]} ({report.mode})", ""]
    for warning in report.warnings:
        out.append(paint("33", f"warning: {warning}"))
    for change in report.plan.changes:
        symbol = _SYMBOL[change.action]
        label = f"{symbol} {change.key.short}"
        if change.action is Action.SKIPPED:
            label += f"  ({_skipped(change)} skipped: {change.reason})"
        out.append(paint(_COLOUR.get(change.action, "0"), label))
        if change.action is Action.CONFIGURED or (change.action is Action.SKIPPED and _skipped(change) == "update"):
            out.extend("    " + _field_line(f) for f in change.diff)
    if show_unchanged:
        out.extend(f"= {key.short}" for key in report.plan.unchanged)
    quiet = not report.plan.has_changes and not any(c.action is Action.SKIPPED for c in report.plan.changes)
    if quiet and not report.plan.errors:
        out.append("No changes. The applied state matches the revision.")
    if report.governance:
        out += ["", "Governance:"]
        out.extend(paint("31;1", line) if line.startswith("!") else line for line in _governance_lines(report))
    for error in report.plan.errors:
        out.append(paint("31;1", f"error: {error}"))
    out += ["", closing_line(report)]
    return "\n".join(out) + "\n"


def _skipped(change: Change) -> str:
    """What a skipped change would have done: a whole-object removal, a creation, or an update."""
    whole = all("." not in f.path and "[" not in f.path for f in change.diff)
    if whole and all(f.op == "removed" for f in change.diff):
        return "delete"
    if whole and all(f.op == "added" for f in change.diff):
        return "create"
    return "update"


def _change_block(change: Change) -> str:
    lines = [f"{_SYMBOL[change.action]} {change.key.short}"]
    if change.action is Action.SKIPPED:
        lines[0] += f"  ({_skipped(change)} skipped: {change.reason})"
    lines.extend("  " + _field_line(f) for f in change.diff)
    return "\n".join(lines)


def render_markdown(report: PlanReport) -> list[str]:
    """Pull-request comment in parts, each below 60,000 characters (GitHub's limit is 65,536)."""
    head = [
        f"### orlojd plan `{(report.base or 'empty')[:12]}` → `{report.head[:12]}`",
        "",
        f"**{closing_line(report)}**",
        "",
    ]
    sections = _chunked("#### Errors", [f"> :x: **error:** {error}" for error in report.plan.errors])
    lines = []
    for g in report.governance:
        flag = ":warning: **widening** " if g.widening else ""
        pending = "_policy change pending:_ " if g.pending else ""
        lines.append(f"- {flag}`{g.agent or 'policy'}`: {pending}{g.change}")
    sections += _chunked("#### Governance", lines)
    by_kind: dict[str, list[Change]] = {}
    for change in report.plan.changes:
        by_kind.setdefault(change.key.kind, []).append(change)
    for kind, changes in by_kind.items():
        summary = f"{kind} ({len(changes)} changed)"
        blocks = [_change_block(c) for c in changes]
        sections.extend(_details(summary, blocks))
    if not by_kind:
        head.append("No changes.")
    return _split("\n".join(head), sections)


def _pack(items: Sequence[str]) -> list[list[str]]:
    """Items in runs short enough for one part; an item too long on its own is truncated."""
    budget = MARKDOWN_PART_LIMIT - 2_000
    runs: list[list[str]] = [[]]
    size = 0
    for item in items:
        item = item if len(item) < budget else item[: budget - 20] + "\n... (truncated)"
        if size + len(item) > budget and runs[-1]:
            runs.append([])
            size = 0
        runs[-1].append(item)
        size += len(item) + 1
    return runs if runs[0] else []


def _chunked(title: str, lines: Sequence[str]) -> list[str]:
    """Sections of whole lines under ``title``, each short enough for one part."""
    runs = _pack(lines)
    return [
        "\n".join([title if index == 0 else f"{title} (continued)", "", *run]) + "\n" for index, run in enumerate(runs)
    ]


def _details(summary: str, blocks: Sequence[str]) -> list[str]:
    """One collapsible section, cut into several when a kind's diff is too long for one part."""
    runs = _pack(blocks)
    out = []
    for index, run in enumerate(runs):
        label = summary if len(runs) == 1 else f"{summary}, {index + 1}/{len(runs)}"
        body = "\n".join(run).replace("```", "` ` `")
        out.append(f"<details><summary>{label}</summary>\n\n```diff\n{body}\n```\n</details>\n")
    return out


def _split(head: str, sections: list[str]) -> list[str]:
    parts: list[str] = [head]
    for section in sections:
        if len(parts[-1]) + len(section) + 1 > MARKDOWN_PART_LIMIT - 100:
            parts.append("")
        parts[-1] += "\n" + section
    if len(parts) == 1:
        return parts
    return [PART_MARKER.format(n=i + 1, total=len(parts)) + "\n" + p for i, p in enumerate(parts)]


def plan_json(report: PlanReport) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "mode": report.mode,
        "base": report.base,
        "head": report.head,
        "inventory_fingerprint": report.fingerprint,
        "summary": {k: v for k, v in report.plan.summary.items()},
        "changes": [
            {
                "kind": c.key.kind,
                "namespace": c.key.namespace,
                "name": c.key.name,
                "action": c.action.value,
                "reason": c.reason or None,
                "diff": [{"path": f.path, "op": f.op, "old": f.old, "new": f.new} for f in c.diff],
            }
            for c in report.plan.changes
        ],
        "governance": [g.as_json() for g in report.governance],
        "widening": report.widening > 0,
        "errors": list(report.plan.errors),
        "warnings": list(report.warnings),
        "exit_code": report.exit_code,
    }


def render_json(report: PlanReport) -> str:
    return json.dumps(plan_json(report), indent=2, sort_keys=False, ensure_ascii=False) + "\n"
