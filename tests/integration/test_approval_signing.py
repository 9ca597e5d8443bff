"""Signed approvals against real ed25519 keys and the real ``ssh-keygen -Y``.

Keys are made with ``ssh-keygen -t ed25519`` in tmp_path; allowed_signers files are written
the way an operator would. Every check goes through ``orlojd.adapters.approval_signing``
exactly as ``orlojd approve --sign-with`` and the approvals code call it. No ssh-agent of the
developer's session is used: SSH_AUTH_SOCK is cleared unless a test starts its own agent.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orlojd.adapters.approval_signing import (
    NAMESPACE,
    SignatureRejected,
    VerifiedSignature,
    approval_message,
    sign,
    verify,
)
from orlojd.errors import ConfigError, OrlojError

DIGEST = "sha256:" + "ab" * 32
MESSAGE = approval_message("appr-42", DIGEST, "approve", "alice@example.com")


def run(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        list(args),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(args)} failed: {done.stderr.decode(errors='replace')}"
    return done.stdout.decode().strip()


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: Path
    public_line: str  # "ssh-ed25519 AAAA..."
    fingerprint: str  # "SHA256:..."


def make_key(folder: Path, name: str, passphrase: str = "") -> SshKey:
    private = folder / name
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", name, "-f", str(private))
    public = private.with_name(f"{name}.pub")
    fingerprint = run("ssh-keygen", "-l", "-E", "sha256", "-f", str(public)).split()[1]
    return SshKey(private, public, " ".join(public.read_text().split()[:2]), fingerprint)


def allowed_line(principals: str, key: SshKey, options: str = f'namespaces="{NAMESPACE}"') -> str:
    return f"{principals} {options} {key.public_line}\n"


@pytest.fixture(autouse=True)
def no_outside_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def alice(tmp_path: Path) -> SshKey:
    return make_key(tmp_path, "alice")


@pytest.fixture
def allowed(tmp_path: Path, alice: SshKey) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_text("# approvers\n" + allowed_line("alice@example.com", alice))
    return path


def rejected(message: bytes, signature: str, allowed_signers: Path) -> SignatureRejected:
    with pytest.raises(SignatureRejected) as caught:
        verify(message, signature, allowed_signers)
    return caught.value


# -- the message -------------------------------------------------------------------------------


def test_approval_message_is_versioned_line_based_text() -> None:
    assert approval_message("appr-1", "sha256:00", "deny", "bob@example.com") == (
        b"orlojd approval v1\nid appr-1\ndigest sha256:00\nverdict deny\napprover bob@example.com\n"
    )


@pytest.mark.parametrize("field", range(4))
@pytest.mark.parametrize("bad", ["x\nverdict approve", "x\r"])
def test_line_break_in_any_field_is_refused(field: int, bad: str) -> None:
    fields = ["appr-1", DIGEST, "approve", "alice@example.com"]
    fields[field] = bad
    with pytest.raises(ValueError, match="line break"):
        approval_message(*fields)


@pytest.mark.parametrize("verdict", ["approved", "", "APPROVE"])
def test_unknown_or_empty_verdict_is_refused(verdict: str) -> None:
    with pytest.raises(ValueError, match="verdict"):
        approval_message("appr-1", DIGEST, verdict, "alice@example.com")


# -- sign + verify -----------------------------------------------------------------------------


def test_round_trip_returns_the_principal_and_fingerprint(alice: SshKey, allowed: Path) -> None:
    signature = sign(MESSAGE, alice.private)
    assert signature.startswith("-----BEGIN SSH SIGNATURE-----")
    assert verify(MESSAGE, signature, allowed) == VerifiedSignature("alice@example.com", alice.fingerprint)


@pytest.mark.parametrize(
    "other",
    [
        approval_message("appr-42", "sha256:" + "cd" * 32, "approve", "alice@example.com"),
        approval_message("appr-42", DIGEST, "deny", "alice@example.com"),
        approval_message("appr-43", DIGEST, "approve", "alice@example.com"),
        approval_message("appr-42", DIGEST, "approve", "mallory@example.com"),
    ],
    ids=["other-digest", "other-verdict", "other-id", "other-approver"],
)
def test_signature_does_not_carry_over_to_another_approval(alice: SshKey, allowed: Path, other: bytes) -> None:
    signature = sign(MESSAGE, alice.private)
    error = rejected(other, signature, allowed)
    assert error.reason == "bad_signature"
    assert "bad_signature" in str(error)


def test_key_not_in_allowed_signers_is_untrusted(tmp_path: Path, allowed: Path) -> None:
    mallory = make_key(tmp_path, "mallory")
    error = rejected(MESSAGE, sign(MESSAGE, mallory.private), allowed)
    assert error.reason == "untrusted_key"
    assert str(allowed) in str(error)


def test_key_allowed_only_for_git_is_not_permitted(tmp_path: Path, alice: SshKey) -> None:
    git_only = tmp_path / "git_only"
    git_only.write_text(allowed_line("alice@example.com", alice, 'namespaces="git"'))
    error = rejected(MESSAGE, sign(MESSAGE, alice.private), git_only)
    assert error.reason == "key_not_permitted"


def test_signature_made_for_another_namespace_is_bad(tmp_path: Path, alice: SshKey, allowed: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_bytes(MESSAGE)
    run("ssh-keygen", "-Y", "sign", "-f", str(alice.private), "-n", "git", str(payload))
    error = rejected(MESSAGE, payload.with_name("payload.sig").read_text(), allowed)
    assert error.reason == "bad_signature"


def test_expired_key_is_rejected(tmp_path: Path, alice: SshKey) -> None:
    expired = tmp_path / "expired"
    expired.write_text(allowed_line("alice@example.com", alice, f'namespaces="{NAMESPACE}",valid-before="20200101"'))
    error = rejected(MESSAGE, sign(MESSAGE, alice.private), expired)
    assert error.reason == "untrusted_key"


def test_missing_allowed_signers_names_the_path(tmp_path: Path, alice: SshKey) -> None:
    missing = tmp_path / "nowhere" / "allowed_signers"
    error = rejected(MESSAGE, sign(MESSAGE, alice.private), missing)
    assert error.reason == "no_allowed_signers"
    assert str(missing) in str(error)
    assert isinstance(error, OrlojError) and error.hint


def test_allowed_signers_with_no_keys_is_rejected(tmp_path: Path, alice: SshKey) -> None:
    empty = tmp_path / "allowed_signers"
    empty.write_text("# nobody yet\n\n")
    error = rejected(MESSAGE, sign(MESSAGE, alice.private), empty)
    assert error.reason == "no_allowed_signers"
    assert str(empty) in str(error)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not a signature",
        "-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n",
    ],
    ids=["empty", "text", "armored-junk"],
)
def test_garbage_signature_is_bad(allowed: Path, garbage: str) -> None:
    assert rejected(MESSAGE, garbage, allowed).reason == "bad_signature"


def test_corrupted_signature_byte_is_bad(alice: SshKey, allowed: Path) -> None:
    lines = sign(MESSAGE, alice.private).splitlines()
    body = lines[3]
    lines[3] = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]  # inside the Ed25519 signature
    assert rejected(MESSAGE, "\n".join(lines), allowed).reason == "bad_signature"


def test_key_listed_for_several_principals_returns_the_first(tmp_path: Path, alice: SshKey) -> None:
    several = tmp_path / "several"
    several.write_text(allowed_line("alice@example.com,alice-laptop", alice))
    assert verify(MESSAGE, sign(MESSAGE, alice.private), several).principal == "alice@example.com"


def test_only_the_first_line_listing_the_key_counts(tmp_path: Path, alice: SshKey) -> None:
    """ssh-keygen 9.2's find-principals stops at the first line with the key, whatever -n says."""
    signature = sign(MESSAGE, alice.private)
    git_first = tmp_path / "git_first"
    git_first.write_text(
        allowed_line("alice@git", alice, 'namespaces="git"') + allowed_line("alice@example.com", alice)
    )
    error = rejected(MESSAGE, signature, git_first)
    assert error.reason == "key_not_permitted"
    assert "first line" in error.hint
    approval_first = tmp_path / "approval_first"
    approval_first.write_text(
        allowed_line("alice@example.com", alice) + allowed_line("alice@git", alice, 'namespaces="git"')
    )
    assert verify(MESSAGE, signature, approval_first).principal == "alice@example.com"


# -- signing failures --------------------------------------------------------------------------


def test_missing_key_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "keys" / "id_ed25519"
    with pytest.raises(ConfigError) as caught:
        sign(MESSAGE, missing)
    assert str(missing) in str(caught.value)
    assert caught.value.hint


def test_passphrase_key_without_agent_is_a_config_error_not_a_prompt(tmp_path: Path) -> None:
    locked = make_key(tmp_path, "locked", passphrase="correct horse")
    with pytest.raises(ConfigError) as caught:
        sign(MESSAGE, locked.private)
    assert str(locked.private) in str(caught.value)
    assert "ssh-add" in caught.value.hint


def test_public_key_without_agent_is_a_config_error(tmp_path: Path) -> None:
    key = make_key(tmp_path, "agentless")
    key.private.unlink()
    with pytest.raises(ConfigError) as caught:
        sign(MESSAGE, key.public)
    assert str(key.public) in str(caught.value)


@pytest.fixture
def agent(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private ssh-agent on a short socket path; SSH_AUTH_SOCK points at it while the test runs."""
    with tempfile.TemporaryDirectory(prefix="orlojd-agent-") as folder:
        sock = str(Path(folder) / "agent.sock")
        output = run("ssh-agent", "-s", "-a", sock)  # returns once the socket is bound
        pid_match = re.search(r"SSH_AGENT_PID=(\d+)", output)
        assert pid_match, output
        pid = int(pid_match.group(1))
        monkeypatch.setenv("SSH_AUTH_SOCK", sock)
        try:
            yield sock
        finally:
            os.kill(pid, signal.SIGTERM)


def test_public_key_signs_through_the_agent(tmp_path: Path, agent: str) -> None:
    key = make_key(tmp_path, "carol")
    run("ssh-add", "-q", str(key.private), env={"SSH_AUTH_SOCK": agent})
    key.private.unlink()  # only the agent can sign now
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(allowed_line("carol@example.com", key))
    assert verify(MESSAGE, sign(MESSAGE, key.public), allowed).principal == "carol@example.com"
