"""The README's first Quick start command, end to end: ``orlojd demo`` tells the whole story offline.

init a repository, push it, a real ``orlojd serve``; the init repository's Task runs on the scripted model:
scan-documents allowed and run, flag-issues waits for approval until ``orlojd approve``, export-analytics
(never granted) denied and returned to the model, which finishes; a pushed change is applied; the signed
audit notes reach origin and ``orlojd audit log`` shows every step. The assertions read the state the
demo leaves behind through the real CLI, not only what it printed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def run(cli: Any, *args: str, cwd: Path, expect: int = 0) -> Any:
    done = cli(*args, cwd=cwd)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert done.code == expect, f"orlojd {' '.join(args)} exited {done.code}\n{done.stdout}\n{done.stderr}"
    return done


def test_demo_tells_the_whole_story_and_ends_with_no_changes(cli: Any, tmp_path: Path) -> None:
    target = tmp_path / "demo"
    out = run(cli, "demo", str(target), cwd=tmp_path).stdout
    state, work = target / "state", target / "agents-repo"

    # The GitOps loop: a pushed change applied, nothing left to plan.
    pushed = re.search(r"git push  \(commit ([0-9a-f]{12})\)", out)
    assert pushed and re.search(r"applied \d+ ms after the push", out), out
    assert f"source: {target / 'origin.git'} main: Ready (Applied): applied {pushed[1]}" in out
    assert "stopped orlojd serve (exit 0)" in out
    status = json.loads(run(cli, "status", "--state-dir", str(state), "--format", "json", cwd=tmp_path).stdout)
    assert status["revision"].startswith(pushed[1])
    assert status["usage"]["agents"], "token usage per agent is reported"
    run(cli, "plan", str(work), "--state-dir", str(state), cwd=tmp_path)

    # One approval: flag-issues, asked by the run and approved by the reviewer.
    approvals = json.loads(
        run(
            cli, "approvals", "list", "--state", "all", "--format", "json", "--state-dir", str(state), cwd=tmp_path
        ).stdout
    )
    assert [(a["tool"], a["state"]) for a in approvals] == [("flag-issues", "approved")]
    assert "$ orlojd approvals list --format json" in out and f"$ orlojd approve {approvals[0]['id']}" in out

    # The task succeeded with the model's final answer and its usage.
    [task] = json.loads(run(cli, "task", "list", "--json", "--state-dir", str(state), cwd=tmp_path).stdout)
    assert task["state"] == "succeeded"
    shown = json.loads(run(cli, "task", "show", task["id"], "--state-dir", str(state), cwd=tmp_path).stdout)
    assert shown["result"]["output"].startswith("Checked 3 documents in reports/2026-q3; flagged 1 issue")
    assert shown["usage"]["calls"] >= 4 and shown["usage"]["tokens"] > 0

    # The signed audit trail in the repository's notes, as an auditor reads it.
    log = run(
        cli, "audit", "log", "--repo", str(work), "--subject", f"task:{task['id']}", "--format", "json", cwd=tmp_path
    )
    records = [json.loads(line) for line in log.stdout.splitlines()]
    decisions = [
        (r["detail"]["tool"], r["detail"]["verdict"], r["detail"]["reason"])
        for r in records
        if r["event"] == "decision"
    ]
    assert ("scan-documents", "allow", "allowed") in decisions
    assert ("flag-issues", "approval_required", "approval_required") in decisions
    assert ("flag-issues", "allow", "approval_granted") in decisions
    assert ("export-analytics", "deny", "tool_not_granted") in decisions
    ran = [r["detail"]["tool"] for r in records if r["event"] == "tool_call"]
    assert "export-analytics" not in ran and {"scan-documents", "flag-issues"} <= set(ran)
    events = [r["event"] for r in records]
    assert {"approval_requested", "approval_approved", "model_call", "task_completed"} <= set(events)
    run(cli, "audit", "verify", "--repo", str(work), "--state-dir", str(state), cwd=tmp_path)
