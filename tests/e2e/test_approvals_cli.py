"""A pushed Task whose call needs approval waits for people, and `orlojd approve|deny` decide it.

Real bare origin, clone and `orlojd serve` subprocess (tests/e2e/serve_harness.py); the CLI in
subprocesses; polls, never sleeps. The Task runs the offline script (``spec.input.script``)
through the governance gate: a model call, a read that is allowed, a write that needs approval.
"""

from __future__ import annotations

import json
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from manifests import ANNOUNCED_AGENT, OFFLINE_ENDPOINT
from serve_harness import Origin, Served, wait_for

pytestmark = pytest.mark.e2e

AUTHOR = "author@example.invalid"  # tests/conftest.py GIT_ENV: who pushed the Tasks

# The announcement's compliance checker on the offline model, with a per-run budget.
AGENT = ANNOUNCED_AGENT.replace("model: gpt-4", "modelRef: offline").replace(
    "    maxTokensPerMinute: 8000\n", "    maxTokensPerMinute: 8000\n    maxTokensPerRun: 50000\n"
)


TOOLS = """\
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: scan-documents
spec:
  type: builtin
---
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: flag-issues
spec:
  type: builtin
"""


def policy(signed: bool = False) -> str:
    return f"""\
apiVersion: orloj.dev/v1
kind: Policy
metadata:
  name: reviewers
spec:
  approval:
    approvers: [alice@example.com, bob@example.com]
    required: 1
    signed: {str(signed).lower()}
    timeout: 10m
"""


def task(name: str, title: str) -> str:
    return f"""\
apiVersion: orloj.dev/v1
kind: Task
metadata:
  name: {name}
spec:
  agent: compliance-checker
  input:
    script:
      - model: scripted/demo
        tokens: 800
        usage: {{prompt: 700, completion: 90}}
      - tool: scan-documents
        read: compliance_docs
        args: {{path: reports/q3}}
      - tool: flag-issues
        write: issue_tracker
        args: {{title: "{title}", api_key: sk-not-for-approvers}}
"""


def row(served: Served, key: str) -> tuple[str, str | None, str | None, str] | None:
    rows = served.store.rows("SELECT state, result, last_error, id FROM tasks WHERE task_key = :k", k=key) or []
    return (rows[0][0], rows[0][1], rows[0][2], rows[0][3]) if rows else None


def in_state(served: Served, key: str, state: str) -> tuple[str, str | None, str | None, str] | None:
    found = row(served, key)
    return found if found is not None and found[0] == state else None


def origin_with(tmp_path: Path, signed: bool) -> Origin:
    made = Origin.create(tmp_path)
    made.write("models/offline.yaml", OFFLINE_ENDPOINT)
    made.write("agents/compliance-checker.yaml", AGENT)
    made.write("tools/tools.yaml", TOOLS)
    made.write("policies/reviewers.yaml", policy(signed))
    made.write("orlojd.yaml", "workers:\n  size: 2\n  lease: 5s\n")
    return made


def pending(cli: Any, served: Served) -> list[dict[str, Any]]:
    done = cli("approvals", "list", "--format", "json", "--state-dir", str(served.state_dir))
    assert done.code == 0, done.stderr
    return list(json.loads(done.stdout))


def test_a_call_waits_for_approval_then_runs_once_approved_or_fails_when_denied(cli: Any, tmp_path: Path) -> None:
    origin = origin_with(tmp_path, signed=False)
    origin.write("tasks/q3.yaml", task("check-q3", "Q3 gap"))
    origin.write("tasks/q4.yaml", task("check-q4", "Q4 gap"))
    origin.commit("two tasks that write to the issue tracker")
    origin.push()
    state = ["--state-dir"]
    with Served(tmp_path, origin.bare, "--executor", "placeholder") as served:
        state.append(str(served.state_dir))
        ids = [
            wait_for(f"{key} to wait", partial(in_state, served, key, "waiting_approval"), explain=served.explain)[3]
            for key in ("Task/default/check-q3", "Task/default/check-q4")
        ]
        waiting = {a["task_id"]: a for a in pending(cli, served)}
        q3, q4 = waiting[ids[0]], waiting[ids[1]]
        assert (q3["tool"], q3["state"], q3["requested_by"], q3["required"]) == ("flag-issues", "pending", AUTHOR, 1)
        assert q3["digest"].startswith("sha256:") and q3["digest"] != q4["digest"]
        assert "[redacted]" in q3["preview"] and "sk-not-for-approvers" not in q3["preview"]
        assert "Q3 gap" in q3["preview"] and q3["needs"] == [["write", "issue_tracker"]]

        own = cli("approve", q3["id"], "--as", AUTHOR, *state)
        assert own.code == 1 and "nobody approves their own request" in own.stderr
        stranger = cli("approve", q3["id"], "--as", "mallory@example.com", *state)
        assert stranger.code == 1 and "not an approver" in stranger.stderr
        assert in_state(served, "Task/default/check-q3", "waiting_approval"), "refused votes change nothing"

        done = cli("approve", q3["id"], "--as", "alice@example.com", "--reason", "real gap", "--format", "json", *state)
        assert done.code == 0, done.stderr
        assert json.loads(done.stdout)["outcome"] == "approved"
        _, result, _, q3_id = wait_for(
            "check-q3 to finish", lambda: in_state(served, "Task/default/check-q3", "succeeded"), explain=served.explain
        )
        steps = json.loads(result or "{}")["script"]
        assert [s.get("tool") for s in steps] == [None, "scan-documents", "flag-issues"]
        assert (steps[2]["allowed"], steps[2]["reason"], steps[2]["approval"]) == (True, "approval_granted", q3["id"])

        denied = cli("deny", q4["id"], "--as", "bob@example.com", "--reason", "duplicate ticket", *state)
        assert denied.code == 0, denied.stderr
        _, _, error, _ = wait_for(
            "check-q4 to fail", lambda: in_state(served, "Task/default/check-q4", "failed"), explain=served.explain
        )
        assert error is not None and q4["id"] in error and "duplicate ticket" in error
        again = cli("approve", q4["id"], "--as", "alice@example.com", *state)
        assert again.code == 1 and "already denied" in again.stderr

        events = (
            served.store.rows(
                "SELECT event, verdict, reason FROM governance_events "
                "WHERE task_id = :t AND event NOT LIKE 'task_%' ORDER BY id",
                t=q3_id,
            )
            or []
        )
        trail = [tuple(e) for e in events]
        assert trail[:6] == [
            ("model_call", "allow", "allowed"),  # the model call, with its budget reservation
            ("model_usage", None, None),  # and the usage it reported
            ("decision", "allow", "allowed"),  # the read
            ("tool_call", None, None),  # what it did
            ("decision", "approval_required", "approval_required"),  # the write, parked with its request
            ("approval_requested", None, "approval_required"),
        ]
        assert ("approval_vote", None, None) in trail and ("approval_approved", "allow", "approval_granted") in trail
        assert trail[-2:] == [("decision", "allow", "approval_granted"), ("tool_call", None, None)]  # the re-run
        charges = served.store.rows("SELECT tokens, settled FROM budget_charges WHERE task_id = :t", t=q3_id) or []
        assert [tuple(c) for c in charges] == [(790, True)], "the model call ran twice but is charged once"
        listed = cli("approvals", "list", "--state", "all", *state)
        assert q3["id"] in listed.stdout and "approved" in listed.stdout and "denied" in listed.stdout


def _key(folder: Path, name: str) -> tuple[Path, str]:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key, key.with_suffix(".pub").read_text().strip()


def test_a_policy_can_require_the_approval_signed_with_the_approvers_own_key(cli: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    alice_key, alice_pub = _key(keys, "alice")
    mallory_key, _ = _key(keys, "mallory")
    signers = keys / "allowed_signers"
    signers.write_text(f'alice@example.com namespaces="orlojd-approval" {alice_pub}\n')
    desk = tmp_path / "desk"  # where the approver runs the CLI: its orlojd.yaml names the allowed signers
    desk.mkdir()
    (desk / "orlojd.yaml").write_text(f"approvals:\n  allowedSigners: {signers}\n")

    origin = origin_with(tmp_path, signed=True)
    origin.write("tasks/q3.yaml", task("check-q3", "Q3 gap"))
    origin.commit("a task under a signed-approval policy")
    origin.push()
    with Served(tmp_path, origin.bare, "--executor", "placeholder") as served:
        _, _, _, task_id = wait_for(
            "the task to wait",
            lambda: in_state(served, "Task/default/check-q3", "waiting_approval"),
            explain=served.explain,
        )
        (approval,) = pending(cli, served)
        assert approval["signed"] is True
        state = ["--state-dir", str(served.state_dir)]
        unsigned = cli("approve", approval["id"], "--as", "alice@example.com", *state, cwd=desk)
        assert unsigned.code == 1 and "must be signed" in unsigned.stderr
        forged = cli(
            "approve", approval["id"], "--as", "alice@example.com", "--sign-with", str(mallory_key), *state, cwd=desk
        )
        assert forged.code == 1 and "untrusted_key" in forged.stderr
        signed = cli("approve", approval["id"], "--sign-with", str(alice_key), "--format", "json", *state, cwd=desk)
        assert signed.code == 0, signed.stderr
        vote = json.loads(signed.stdout)
        assert (vote["outcome"], vote["voter"], vote["signed"]) == ("approved", "alice@example.com", True)
        wait_for(
            "the task to finish", lambda: in_state(served, "Task/default/check-q3", "succeeded"), explain=served.explain
        )
        stored = served.store.rows("SELECT approver, signature FROM approval_votes") or []
        assert [(r[0], r[1].startswith("-----BEGIN SSH SIGNATURE-----")) for r in stored] == [
            ("alice@example.com", True)
        ]
        assert task_id
