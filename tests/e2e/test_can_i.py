"""`orlojd can-i` through the real CLI, on the example set `orlojd init` writes (the compliance-checker)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
from conftest import git

pytestmark = pytest.mark.e2e

AGENT_FILE = "agents/compliance-checker.yaml"


class Result(Protocol):
    code: int
    stdout: str
    stderr: str


Cli = Callable[..., Result]


@pytest.fixture
def demo(cli: Cli, tmp_path: Path) -> Path:
    target = tmp_path / "demo"
    done = cli("init", str(target))
    assert done.code == 0, done.stderr
    return target


def line_of(path: Path, text: str) -> int:
    """1-based line of the first line of ``path`` whose stripped text equals ``text``."""
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return lines.index(text) + 1


def ask(cli: Cli, repo: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = cli("can-i", *args, "--path", str(repo), "--format", "json")
    assert "Traceback" not in done.stderr, done.stderr
    return done.code, json.loads(done.stdout)


def test_granted_read_is_allowed_because_of_the_grant_line(cli: Cli, demo: Path) -> None:
    code, answer = ask(cli, demo, "compliance-checker", "scan-documents", "--read", "compliance_docs")
    assert code == 0
    assert (answer["decision"], answer["reason"]) == ("allow", "allowed")
    head = git(demo, "rev-parse", "HEAD")
    assert answer["revision"] == head
    assert answer["because"] == [
        {
            "kind": "Agent",
            "namespace": "default",
            "name": "compliance-checker",
            "field": "spec.tools[0].permissions",
            "absent": False,
            "file": AGENT_FILE,
            "line": line_of(demo / AGENT_FILE, "permissions:"),
            "commit": head,
        }
    ]


def test_write_needing_approval_points_at_require_approval(cli: Cli, demo: Path) -> None:
    code, answer = ask(cli, demo, "default/compliance-checker", "flag-issues", "--write", "issue_tracker")
    assert code == 1
    assert (answer["decision"], answer["reason"]) == ("approval_required", "approval_required")
    [because] = answer["because"]
    assert because["field"] == "spec.governance.requireApproval[0]"
    assert because["file"] == AGENT_FILE
    assert because["line"] == line_of(demo / AGENT_FILE, "requireApproval:") + 1
    assert because["commit"] == git(demo, "rev-parse", "HEAD")


def test_tool_requires_apply_without_read_or_write(cli: Cli, demo: Path) -> None:
    code, answer = ask(cli, demo, "compliance-checker", "flag-issues")
    assert code == 1
    assert answer["decision"] == "approval_required"
    assert answer["needs"] == []


def test_ungranted_tool_is_denied_with_an_absent_provenance(cli: Cli, demo: Path) -> None:
    code, answer = ask(cli, demo, "compliance-checker", "query-analytics", "--read", "analytics_db")
    assert code == 1
    assert (answer["decision"], answer["reason"]) == ("deny", "tool_not_granted")
    [because] = answer["because"]
    assert because["absent"] is True
    assert because["kind"] == "Agent" and because["name"] == "compliance-checker"
    assert because["field"] == "spec.tools[name=query-analytics]"
    assert because["file"] == AGENT_FILE
    assert because["line"] == line_of(demo / AGENT_FILE, "tools:")


def test_ungranted_resource_is_denied(cli: Cli, demo: Path) -> None:
    code, answer = ask(cli, demo, "compliance-checker", "scan-documents", "--read", "analytics_db")
    assert code == 1
    assert (answer["decision"], answer["reason"]) == ("deny", "resource_not_permitted")
    assert answer["because"][0]["absent"] is True
    assert answer["because"][0]["field"] == "spec.tools[0].permissions"


def test_policy_deny_is_located_in_the_policy_file(cli: Cli, demo: Path) -> None:
    agent, tool = demo / AGENT_FILE, demo / "tools" / "flag-issues.yaml"
    agent.write_text(
        agent.read_text().replace(
            "- write: issue_tracker\n", "- write: issue_tracker\n        - delete: issue_tracker\n", 1
        )
    )
    tool.write_text(
        tool.read_text().replace("- write: issue_tracker\n", "- write: issue_tracker\n    - delete: issue_tracker\n")
    )
    git(demo, "commit", "-qam", "flag-issues deletes too")
    head = git(demo, "rev-parse", "HEAD")
    code, answer = ask(cli, demo, "compliance-checker", "flag-issues")
    assert code == 1
    assert (answer["decision"], answer["reason"]) == ("deny", "blocked_by_policy")
    [because] = answer["because"]
    assert (because["kind"], because["name"], because["field"]) == ("Policy", "baseline", "spec.deny[0]")
    assert because["file"] == "policies/baseline.yaml"
    assert because["line"] == line_of(demo / "policies" / "baseline.yaml", "- delete: issue_tracker")
    assert because["commit"] == head
    code, answer = ask(cli, demo, "compliance-checker", "flag-issues", "--rev", "HEAD~1")
    assert (code, answer["decision"]) == (1, "approval_required")


def test_rev_reads_an_older_commit(cli: Cli, demo: Path) -> None:
    first = git(demo, "rev-parse", "HEAD")
    agent = demo / AGENT_FILE
    agent.write_text(
        agent.read_text().replace(
            "    - name: scan-documents\n      permissions:\n        - read: compliance_docs\n", ""
        )
    )
    git(demo, "commit", "-qam", "revoke scan-documents")
    code, answer = ask(cli, demo, "compliance-checker", "scan-documents")
    assert (code, answer["reason"]) == (1, "tool_not_granted")
    code, answer = ask(cli, demo, "compliance-checker", "scan-documents", "--rev", first[:10])
    assert (code, answer["decision"]) == (0, "allow")
    assert answer["revision"] == first
    assert answer["because"][0]["commit"] == first


def test_text_output(cli: Cli, demo: Path) -> None:
    done = cli("can-i", "compliance-checker", "scan-documents", "--path", str(demo))
    assert done.code == 0
    head = git(demo, "rev-parse", "HEAD")
    line = line_of(demo / AGENT_FILE, "permissions:")
    assert done.stdout.splitlines() == [
        "yes (allowed): allowed",
        f"  {AGENT_FILE}:{line} Agent/compliance-checker spec.tools[0].permissions (commit {head[:12]})",
    ]
    done = cli("can-i", "compliance-checker", "nope", "--path", str(demo))
    assert done.code == 1
    assert done.stdout.startswith("no (tool_not_granted): ")
    assert "(absent)" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nobody", "scan-documents"), "error: no agent Agent/nobody"),
        (("compliance-checker", "scan-documents", "--rev", "no-such-rev"), "error: revision 'no-such-rev'"),
        (("a/b/c", "scan-documents"), "error: 'a/b/c' is not name or namespace/name"),
        (("compliance-checker", "scan-documents", "--format", "yaml"), "error: unknown --format"),
    ],
)
def test_bad_input_is_an_error_line(cli: Cli, demo: Path, args: tuple[str, ...], message: str) -> None:
    done = cli("can-i", *args, "--path", str(demo))
    assert done.code == 1
    assert done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_invalid_manifests_at_the_revision_are_an_error(cli: Cli, demo: Path) -> None:
    (demo / "agents" / "broken.yaml").write_text("apiVersion: orloj.dev/v1\nkind: Agent\nmetadata: {}\n")
    git(demo, "add", "agents/broken.yaml")
    git(demo, "commit", "-qm", "broken")
    done = cli("can-i", "compliance-checker", "scan-documents", "--path", str(demo))
    assert done.code == 1
    assert "are invalid" in done.stderr and "Traceback" not in done.stderr
    done = cli("can-i", "compliance-checker", "scan-documents", "--path", str(demo), "--rev", "HEAD~1")
    assert done.code == 0
