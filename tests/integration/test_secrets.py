"""A ModelEndpoint's API key from each kind of Secret, through the agent loop to a real provider server.

``auth.secretRef`` names a Secret applied from git; its value is read when the run starts (``adapters/secrets.py``)
from a file (one trailing newline stripped, a rotated file used from the next run on) or a systemd credential
(``$CREDENTIALS_DIRECTORY/<name>``), and arrives at the OpenAI-compatible server on 127.0.0.1 as
``Authorization: Bearer``. A value that cannot be read fails the run for good with a message that names the
Secret and the next step, and no value ever reaches the audit trail. (Environment variables: test_model_endpoints.)
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import test_model_endpoints as shared
from conftest import GitRepo
from manifests import secret
from runs import apply_files, claim_run
from test_model_endpoints import AGENT, Provider, endpoint

from orlojd.adapters.audit import AuditLog
from orlojd.adapters.store import Store
from orlojd.engine.agent_loop import AgentLoop
from orlojd.engine.gate import Gate
from orlojd.engine.workers import TaskFailed

provider = shared.provider  # that module's fixture: the provider server, recording each request's headers
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def deploy(repo: GitRepo, store: Store, provider: Provider, source: str) -> AgentLoop:
    files = {
        "agent.yaml": AGENT,
        "secret.yaml": secret("provider-key", source),
        "primary.yaml": endpoint("primary", provider.base, "model-a"),
    }
    apply_files(repo, store, files)
    return AgentLoop(store, Gate(store))


def run(store: Store, loop: AgentLoop, name: str) -> str:
    """One run as Task ``name``; its task id."""
    claimed = claim_run(store, "writer", name=name)
    assert loop(claimed, threading.Event())["output"] == "all clear"
    return claimed.id


def audit_text(store: Store, task_id: str) -> str:
    return json.dumps([e.detail for e in AuditLog(store).list_all(task_id=task_id)], default=str)


def test_a_file_secret_is_the_bearer_key_and_its_rotation_is_used_next_run(
    repo: GitRepo, store: Store, provider: Provider, tmp_path: Path
) -> None:
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-file-1111\n")  # as `echo key > file` writes it
    loop = deploy(repo, store, provider, f"file: {key_file}")
    first = run(store, loop, "first")
    key_file.write_text("sk-file-2222\n")
    second = run(store, loop, "second")
    assert [s.headers["authorization"] for s in provider.seen] == ["Bearer sk-file-1111", "Bearer sk-file-2222"]
    assert "sk-file-1111" not in audit_text(store, first) and "sk-file-2222" not in audit_text(store, second)


def test_a_systemd_credential_is_the_bearer_key(
    repo: GitRepo, store: Store, provider: Provider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"  # what LoadCredential=openai-key:/etc/orlojd/openai.key sets up
    credentials.mkdir()
    (credentials / "openai-key").write_text("sk-cred-3333")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    loop = deploy(repo, store, provider, "systemdCredential: openai-key")
    task_id = run(store, loop, "cred")
    assert [s.headers["authorization"] for s in provider.seen] == ["Bearer sk-cred-3333"]
    assert "sk-cred-3333" not in audit_text(store, task_id)


@sqlite_only
@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("env: ORLOJD_TEST_UNSET_KEY", "environment variable ORLOJD_TEST_UNSET_KEY is not set; set it in the daemon's"),
        ("file: /nonexistent/orlojd/openai.key", "cannot read /nonexistent/orlojd/openai.key"),
        ("systemdCredential: openai-key", "CREDENTIALS_DIRECTORY is not set; add LoadCredential=openai-key:"),
    ],
)
def test_a_key_that_cannot_be_read_fails_the_run_for_good_naming_the_secret(
    repo: GitRepo, store: Store, provider: Provider, monkeypatch: pytest.MonkeyPatch, source: str, problem: str
) -> None:
    monkeypatch.delenv("ORLOJD_TEST_UNSET_KEY", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    loop = deploy(repo, store, provider, source)
    claimed = claim_run(store, "writer")
    with pytest.raises(TaskFailed) as failed:
        loop(claimed, threading.Event())
    assert failed.value.permanent, "trying again cannot help until someone provides the key"
    assert "model endpoint default/primary: secret default/provider-key: " in str(failed.value)
    assert problem in str(failed.value)
    assert provider.seen == [], "nothing was sent without the key"
    assert not [e for e in AuditLog(store).list_all(task_id=claimed.id) if e.event == "model_call"]


@sqlite_only
def test_a_fallback_whose_key_cannot_be_read_is_skipped_not_fatal(
    repo: GitRepo, store: Store, provider: Provider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORLOJD_TEST_UNSET_KEY", raising=False)
    key_file = tmp_path / "openai.key"
    key_file.write_text("sk-file-1111\n")
    loop = deploy(repo, store, provider, f"file: {key_file}")
    backup = endpoint("backup", provider.base, "model-b").replace("secretRef: provider-key", "secretRef: backup-key")
    unset = secret("backup-key", "env: ORLOJD_TEST_UNSET_KEY")
    primary = endpoint("primary", provider.base, "model-a", "  fallbacks: [backup]\n")
    apply_files(repo, store, {"backup.yaml": backup + "---\n" + unset, "primary.yaml": primary})
    run(store, loop, "primary-answers")
    assert [s.body["model"] for s in provider.seen] == ["model-a"], "the primary answers despite the broken fallback"

    provider.script = [shared.error(503), shared.error(503)]
    with pytest.raises(TaskFailed) as failed:
        loop(claim_run(store, "writer", name="outage"), threading.Event())
    assert not failed.value.permanent, "the outage is transient, whatever the fallback's state"
    assert "skipped model endpoint default/backup: secret default/backup-key: environment variable" in str(failed.value)
    assert [s.body["model"] for s in provider.seen] == ["model-a"] * 3, "model-b was never called"
