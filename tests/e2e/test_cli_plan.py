"""The real ``orlojd`` command in a subprocess: plan, apply, status and demo.

The state store is the ``db_url`` fixture of tests/integration/conftest.py (SQLite file or a
throw-away PostgreSQL database), passed with ``--db``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from manifests import OFFLINE_ENDPOINT

pytestmark = pytest.mark.e2e


SECRET_VALUE = "hunter2-supersecret"

ENDPOINT = OFFLINE_ENDPOINT


def tool(name: str, description: str = "") -> str:
    return f"""\
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: {name}
spec:
  type: builtin
  description: "{description}"
  requires:
    - read: {name}
"""


def agent(name: str, permissions: list[str], tool_name: str = "ledger") -> str:
    lines = "".join(f"        - {p}\n" for p in permissions)
    return f"""\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: {name}
spec:
  modelRef: offline
  tools:
    - name: {tool_name}
      permissions:
{lines}"""


def policy(deny: list[str]) -> str:
    lines = "".join(f"    - {d}\n" for d in deny)
    return f"""\
apiVersion: orloj.dev/v1
kind: Policy
metadata:
  name: guard
spec:
  deny:
{lines}"""


def run(cli: Any, *args: str, cwd: Path, expect: int) -> Any:
    """One CLI call: the exit code it must give, and never a traceback."""
    done = cli(*args, cwd=cwd)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert done.code == expect, f"orlojd {' '.join(args)} exited {done.code}\n{done.stdout}\n{done.stderr}"
    return done


def write_base(repo: Any) -> None:
    repo.write("models/offline.yaml", ENDPOINT)
    repo.write("tools/ledger.yaml", tool("ledger"))
    repo.write("agents/clerk.yaml", agent("clerk", ["read: ledger"]))


def test_plan_exit_codes_none_changes_widening_error(cli: Any, repo: Any, db_url: str, tmp_path: Path) -> None:
    write_base(repo)
    repo.commit("base")

    first = run(cli, "plan", "--db", db_url, cwd=repo.path, expect=3)  # a new agent widens governance
    assert "+ Agent/clerk" in first.stdout
    assert first.stdout.rstrip().splitlines()[-1].startswith("Plan: 3 to create, 0 to update, 0 to delete; ")
    run(cli, "apply", "--db", db_url, cwd=repo.path, expect=0)

    clean = run(cli, "plan", str(repo.path), "--db", db_url, cwd=tmp_path, expect=0)  # PATH argument
    assert "No changes." in clean.stdout

    repo.write("tools/ledger.yaml", tool("ledger", description="the general ledger"))
    repo.commit("describe the tool")
    changed = run(cli, "plan", str(repo.path), "--db", db_url, cwd=tmp_path, expect=2)
    assert "~ Tool/ledger" in changed.stdout
    assert '~ spec.description: "" -> "the general ledger"' in changed.stdout

    repo.write("agents/clerk.yaml", agent("clerk", ["read: ledger"]).replace("modelRef", "modelRfe"))
    repo.commit("typo")
    broken = run(cli, "plan", "--db", db_url, cwd=repo.path, expect=1)
    assert "error:" in broken.stdout and "modelRfe" in broken.stdout


def test_unknown_revision_is_an_error_without_a_traceback(cli: Any, repo: Any, tmp_path: Path) -> None:
    write_base(repo)
    repo.commit("base")
    done = run(
        cli, "plan", "--rev", "no-such-branch", "--db", f"sqlite:///{tmp_path / 's.db'}", cwd=repo.path, expect=1
    )
    assert "error: revision 'no-such-branch' not found" in done.stderr


def test_pull_request_plan_judges_agents_by_the_base_policy(cli: Any, repo: Any) -> None:
    write_base(repo)
    repo.write("policies/guard.yaml", policy(["write: ledger"]))
    base = repo.commit("base: writes to the ledger are denied")
    repo.git("checkout", "--quiet", "-b", "pr")
    # The PR widens the agent twice, and changes the Policy: it lifts the deny the
    # first widening needs, and adds a deny that would hide the second widening.
    repo.write("agents/clerk.yaml", agent("clerk", ["read: ledger", "write: ledger", "read: reports"]))
    repo.write("policies/guard.yaml", policy(["read: reports"]))
    head = repo.commit("pr: widen the clerk and change the policy")
    repo.git("checkout", "--quiet", "main")

    done = run(cli, "plan", "--base", "main", "--head", "pr", "--format", "json", cwd=repo.path, expect=3)
    data = json.loads(done.stdout)
    assert (data["mode"], data["base"], data["head"]) == ("pull_request", base, head)
    assert {(c["kind"], c["name"], c["action"]) for c in data["changes"]} == {
        ("Agent", "clerk", "configured"),
        ("Policy", "guard", "configured"),
    }
    judged = [g for g in data["governance"] if not g["pending"]]
    pending = [g for g in data["governance"] if g["pending"]]
    # Under the BASE policy: read:reports is a widening, write:ledger is still denied.
    assert [(g["agent"], g["change"], g["widening"]) for g in judged] == [
        ("clerk", "gains read:reports on tool ledger", True)
    ]
    # The policy change, and what it would do once merged, are listed as pending.
    assert ("clerk", "gains write:ledger on tool ledger", True) in [
        (g["agent"], g["change"], g["widening"]) for g in pending
    ]
    policy_findings = {g["change"]: g["widening"] for g in pending if g["agent"] is None}
    assert policy_findings == {
        "Policy/guard: no longer deny write:ledger (loosened)": True,
        "Policy/guard: now deny read:reports (tightened)": False,
    }
    assert data["widening"] is True and data["exit_code"] == 3

    markdown = run(cli, "plan", "--base", "main", "--head", "pr", "--format", "markdown", cwd=repo.path, expect=3)
    assert ":warning: **widening** `clerk`: gains read:reports on tool ledger" in markdown.stdout
    assert "`policy`: _policy change pending:_ Policy/guard: no longer deny write:ledger (loosened)" in markdown.stdout

    # A pull-request plan reads two commits and writes nothing: no state folder, a clean tree.
    assert not (repo.path / ".orlojd").exists()
    assert repo.git("status", "--porcelain", "--ignored") == ""


def test_plan_json_keys_and_saved_plan_for_apply(cli: Any, repo: Any, tmp_path: Path) -> None:
    write_base(repo)
    head = repo.commit("base")
    db = f"sqlite:///{tmp_path / 'state.db'}"
    saved = tmp_path / "plan.json"

    done = run(cli, "plan", "--format", "json", "--out", str(saved), "--db", db, cwd=repo.path, expect=3)
    data = json.loads(done.stdout)
    assert json.loads(saved.read_text()) == data
    assert {"format_version", "base", "head", "summary", "changes", "governance"} <= set(data)
    assert data["format_version"] == 1
    assert (data["base"], data["head"]) == (None, head)
    assert {"create", "update", "delete", "unchanged"} <= set(data["summary"])
    assert data["summary"]["create"] == 3
    assert {(c["kind"], c["namespace"], c["name"], c["action"]) for c in data["changes"]} == {
        ("ModelEndpoint", "default", "offline", "created"),
        ("Tool", "default", "ledger", "created"),
        ("Agent", "default", "clerk", "created"),
    }
    assert all({"kind", "namespace", "name", "action", "diff"} <= set(c) for c in data["changes"])
    assert all({"agent", "change", "widening"} <= set(g) for g in data["governance"])
    assert data["exit_code"] == 3

    applied = run(cli, "apply", "--plan", str(saved), "--db", db, cwd=repo.path, expect=0)
    assert f"applied {head[:12]}" in applied.stdout


def test_plan_markdown(cli: Any, repo: Any, tmp_path: Path) -> None:
    write_base(repo)
    head = repo.commit("base")
    done = run(cli, "plan", "--format", "markdown", "--db", f"sqlite:///{tmp_path / 's.db'}", cwd=repo.path, expect=3)
    out = done.stdout
    assert out.startswith(f"### orlojd plan `empty` → `{head[:12]}`")
    assert "**Plan: 3 to create, 0 to update, 0 to delete; governance: " in out
    assert "#### Governance" in out
    for kind in ("ModelEndpoint", "Tool", "Agent"):
        assert f"<details><summary>{kind} (1 changed)</summary>" in out
    assert out.count("<details>") == out.count("</details>") == 3
    assert "```diff\n+ Agent/clerk" in out


def test_status_json_reports_revision_and_ready_objects_after_apply(cli: Any, repo: Any, db_url: str) -> None:
    write_base(repo)
    head = repo.commit("base")

    empty = json.loads(run(cli, "status", "--format", "json", "--db", db_url, cwd=repo.path, expect=0).stdout)
    assert empty["revision"] is None and empty["objects"] == []

    run(cli, "apply", "--db", db_url, cwd=repo.path, expect=0)
    data = json.loads(run(cli, "status", "--format", "json", "--db", db_url, cwd=repo.path, expect=0).stdout)
    assert data["revision"] == head
    assert {(o["kind"], o["namespace"], o["name"]) for o in data["objects"]} == {
        ("ModelEndpoint", "default", "offline"),
        ("Tool", "default", "ledger"),
        ("Agent", "default", "clerk"),
    }
    for item in data["objects"]:
        assert {"kind", "namespace", "name", "digest", "conditions"} <= set(item)
        assert item["digest"].startswith("sha256:")
        (ready,) = [c for c in item["conditions"] if c["type"] == "Ready"]
        assert ready["status"] == "True"
        assert ready["reason"] == "Applied"
        assert ready["lastAppliedRevision"] == head


def test_literal_secret_is_refused_and_never_printed(cli: Any, repo: Any, tmp_path: Path) -> None:
    write_base(repo)
    repo.write(
        "secrets/api-key.yaml",
        f"apiVersion: orloj.dev/v1\nkind: Secret\nmetadata:\n  name: api-key\nspec:\n  stringData:\n"
        f"    token: {SECRET_VALUE}\n",
    )
    repo.commit("a literal secret")
    db = f"sqlite:///{tmp_path / 'state.db'}"
    planned = run(cli, "plan", "--db", db, cwd=repo.path, expect=1)
    refused = run(cli, "apply", "--db", db, cwd=repo.path, expect=1)
    assert "Secret/api-key" in planned.stdout and "literal value" in planned.stdout
    assert "apply refused" in refused.stderr
    for output in (planned.stdout, planned.stderr, refused.stdout, refused.stderr):
        assert SECRET_VALUE not in output
