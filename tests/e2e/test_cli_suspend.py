"""`orlojd suspend` / `orlojd resume` through the real CLI: a suspended object is planned, not changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import git


def agent_digest(cli: Any, repo: Path) -> str:
    done = cli("status", str(repo), "--format", "json", cwd=repo)
    assert done.code == 0, done.stderr
    (agent,) = [o for o in json.loads(done.stdout)["objects"] if o["kind"] == "Agent"]
    return str(agent["digest"])


def test_suspend_holds_an_object_until_resume(cli: Any, tmp_path: Path) -> None:
    repo = tmp_path / "agents"
    assert cli("init", str(repo)).code == 0
    assert cli("apply", str(repo), cwd=repo).code == 0
    before = agent_digest(cli, repo)

    done = cli("suspend", "Agent/compliance-checker", "--reason", "incident 42", cwd=repo)
    assert done.code == 0 and "Agent/compliance-checker suspended" in done.stdout
    agent = repo / "agents" / "compliance-checker.yaml"
    agent.write_text(agent.read_text().replace("maxTokensPerMinute: 8000", "maxTokensPerMinute: 9000"))
    git(repo, "commit", "--quiet", "-am", "raise budget")

    planned = cli("plan", str(repo), cwd=repo)
    assert planned.code == 0, planned.stdout  # nothing will change
    assert "(update skipped: suspended with 'orlojd suspend'" in planned.stdout
    assert "~ spec.governance.maxTokensPerMinute: 8000 -> 9000" in planned.stdout
    assert cli("apply", str(repo), cwd=repo).code == 0
    assert agent_digest(cli, repo) == before

    assert "resumed" in cli("resume", "Agent/compliance-checker", cwd=repo).stdout
    assert cli("plan", str(repo), cwd=repo).code == 3  # the budget rise is back, and it widens
    assert cli("apply", str(repo), cwd=repo).code == 0
    assert agent_digest(cli, repo) != before


def test_suspend_rejects_bad_targets(cli: Any, tmp_path: Path) -> None:
    repo = tmp_path / "agents"
    assert cli("init", str(repo)).code == 0
    assert cli("apply", str(repo), cwd=repo).code == 0
    for target, words in [("Agent", "is not Kind/name"), ("Agnt/x", "unknown kind"), ("Agent/nope", "is not applied")]:
        done = cli("suspend", target, cwd=repo)
        assert done.code == 1 and words in done.stderr and "Traceback" not in done.stderr
