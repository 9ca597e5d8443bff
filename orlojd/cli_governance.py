"""`orlojd can-i`: what the governance gate would decide for one call, without running anything.

Like ``kubectl auth can-i``: the manifests at a revision are loaded, indexed once
(core.governance_index.build_context) and one ``decide`` answers. Every entry of
``because`` is located: the file, line and commit of the grant, requirement or policy
rule that decided (or of the place where the missing entry would be).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orlojd.cli_options import fail, wants_json

if TYPE_CHECKING:
    from orlojd.core.desired import Desired
    from orlojd.core.governance import Decision, Provenance
    from orlojd.sources import Snapshot

_SEGMENT = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")

_VERDICT_TEXT = {"allow": "yes", "deny": "no", "approval_required": "approval required"}


def _path_parts(path: str) -> tuple[str | int, ...]:
    """'spec.tools[0].permissions' -> ('spec', 'tools', 0, 'permissions'); '[name=x]' stays a str (never matches)."""
    parts: list[str | int] = []
    for name, index in _SEGMENT.findall(path):
        if name:
            parts.append(name)
        elif index.isdigit():
            parts.append(int(index))
        else:
            parts.append(f"[{index}]")
    return tuple(parts)


def _located(prov: Provenance, desired: Desired, snapshot: Snapshot) -> dict[str, Any]:
    key = prov.key
    entry: dict[str, Any] = {
        "kind": key.kind if key else None,
        "namespace": key.namespace if key else None,
        "name": key.name if key else None,
        "field": prov.path,
        "absent": prov.absent,
        "file": None,
        "line": None,
        "commit": snapshot.commit,
    }
    loaded = desired.objects.get(key) if key is not None else None
    if loaded is not None:
        rel = loaded.file.removeprefix(snapshot.display)
        entry["file"] = snapshot.prefix + rel
        entry["line"] = loaded.source.position(loaded.index, _path_parts(prov.path))[0]
    return entry


def _describe(entry: dict[str, Any]) -> str:
    where = f"{entry['file']}:{entry['line']} " if entry["file"] else ""
    if entry["kind"]:
        ns = "" if entry["namespace"] == "default" else f"{entry['namespace']}/"
        what = f"{entry['kind']}/{ns}{entry['name']}"
        what += f" {entry['field']}" if entry["field"] else ""
    else:
        what = entry["field"]
    absent = " (absent)" if entry["absent"] else ""
    commit = f" (commit {entry['commit'][:12]})" if entry["commit"] else ""
    return f"{where}{what}{absent}{commit}"


def can_i(
    agent: Annotated[str, typer.Argument(metavar="AGENT", help="Agent: name or namespace/name")],
    tool: Annotated[str, typer.Argument(metavar="TOOL", help="Tool the agent would call")],
    read: Annotated[str | None, typer.Option("--read", help="The call reads this resource")] = None,
    write: Annotated[str | None, typer.Option("--write", help="The call writes this resource")] = None,
    rev: Annotated[str, typer.Option("--rev", help="Revision whose manifests decide")] = "HEAD",
    output: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    path: Annotated[Path, typer.Option("--path", help="Folder (or file) with the manifests")] = Path("."),
) -> None:
    """Would the gate allow AGENT to call TOOL? Nothing runs. Exit 0 allowed, 1 denied,
    approval required, or an input error (printed as an error: line).

    With neither --read nor --write, the call needs what the Tool's own requires
    lists (always added). because names the file, line and commit of each rule
    that decided, or of the entry whose absence denied.
    """
    from orlojd.core.governance import CallRequest, context_of, decide
    from orlojd.core.keys import ResourceKey
    from orlojd.core.manifests.base import split_ref
    from orlojd.sources import load_revision

    as_json = wants_json(output)
    if agent.count("/") > 1 or not all(agent.split("/")):
        fail(f"{agent!r} is not name or namespace/name", "for example: orlojd can-i compliance-checker flag-issues")
    desired, snapshot = load_revision(path, rev)
    if not desired.ok:
        fail(
            f"the manifests at {rev} ({(snapshot.commit or '')[:12]}) are invalid: {len(desired.errors)} error(s)",
            f"orlojd validate {path} --rev {rev}",
        )
    akey = ResourceKey("Agent", *split_ref(agent, "default"))
    if akey not in desired.objects:
        fail(f"no agent {akey.short} at {rev} ({(snapshot.commit or '')[:12]})", "orlojd validate lists the objects")
    context = context_of(lo.obj for lo in desired.objects.values())
    needs = tuple((access, resource) for access, resource in (("read", read), ("write", write)) if resource is not None)
    decision: Decision = decide(context, CallRequest(akey, tool, needs))
    because = [_located(p, desired, snapshot) for p in decision.because]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "decision": decision.verdict.value,
                    "reason": decision.reason.value,
                    "message": decision.message,
                    "because": because,
                    "agent": f"{akey.namespace}/{akey.name}",
                    "tool": tool,
                    "needs": [{"access": a, "resource": r} for a, r in needs],
                    "revision": snapshot.commit,
                },
                indent=2,
            )
        )
    else:
        typer.echo(f"{_VERDICT_TEXT[decision.verdict.value]} ({decision.reason.value}): {decision.message}")
        for entry in because:
            typer.echo(f"  {_describe(entry)}")
    raise typer.Exit(0 if decision.allowed else 1)
