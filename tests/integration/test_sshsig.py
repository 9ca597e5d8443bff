"""In-process SSHSIG signing checked by the real verifiers: ``git verify-commit`` and ``ssh-keygen -Y verify``.

Keys come from ``orlojd.adapters.sshsig`` itself or from ``ssh-keygen`` (for the key files it
must read and refuse); commit objects are written with ``git hash-object -t commit -w --stdin``
exactly as the notes writer does.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import GIT_ENV, GitRepo

from orlojd.adapters import sshsig
from orlojd.adapters.sshsig import SigningKey
from orlojd.errors import ConfigError

IDENT = "orlojd <orlojd@test.invalid>"
WHEN = 1_700_000_000


def run(*args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(list(args), input=stdin, capture_output=True, env={**os.environ, **GIT_ENV}, check=False)
    if check:
        assert done.returncode == 0, f"{' '.join(args)} failed: {done.stderr.decode(errors='replace')}"
    return done


def new_key(folder: Path, name: str = "key") -> SigningKey:
    key, generated = sshsig.ensure_key(None, None, folder / name, {})
    assert generated
    return key


def allowed(folder: Path, *keys: SigningKey) -> Path:
    path = folder / "allowed_signers"
    path.write_text("".join(sshsig.allowed_signers_line(k, f"w{i}@test.invalid") + "\n" for i, k in enumerate(keys)))
    return path


def store(repo: GitRepo, obj: bytes) -> str:
    """Write a raw commit object the way the notes writer does; its id."""
    done = run("git", "-C", str(repo.path), "hash-object", "-t", "commit", "-w", "--stdin", stdin=obj)
    return done.stdout.decode().strip()


def write_signed_commit(repo: GitRepo, key: SigningKey, message: str = "orlojd audit") -> str:
    tree = repo.git("mktree")  # the empty tree, stored
    return store(repo, sshsig.signed_commit(key, tree, [], IDENT, WHEN, message))


def verify_commit(repo: GitRepo, allowed_signers: Path, commit: str) -> subprocess.CompletedProcess[bytes]:
    return run(
        "git", "-C", str(repo.path), "-c", f"gpg.ssh.allowedSignersFile={allowed_signers}", "verify-commit", commit,
        check=False,
    )  # fmt: skip


def test_signed_commit_verifies_with_git(repo: GitRepo, tmp_path: Path) -> None:
    key = new_key(tmp_path)
    commit = write_signed_commit(repo, key, "orlojd audit\n\nhead w=a seq=1")
    signers = allowed(tmp_path, key)

    done = verify_commit(repo, signers, commit)
    status = repo.git("-c", f"gpg.ssh.allowedSignersFile={signers}", "log", "-1", "--format=%G?%x00%GK", commit)

    assert done.returncode == 0, done.stderr.decode()
    assert status == f"G\0{key.fingerprint}"
    shown = repo.git("log", "-1", "--format=%an <%ae>%x00%at%x00%B", commit)
    assert shown == f"{IDENT}\0{WHEN}\0orlojd audit\n\nhead w=a seq=1"


def test_signed_commit_with_parents_and_no_final_newline_verifies(repo: GitRepo, tmp_path: Path) -> None:
    key = new_key(tmp_path)
    first = write_signed_commit(repo, key)
    tree = repo.git("mktree")
    second = store(repo, sshsig.signed_commit(key, tree, [first, first], IDENT, WHEN + 1, "merge"))

    assert verify_commit(repo, allowed(tmp_path, key), second).returncode == 0
    assert repo.git("cat-file", "commit", second).endswith("\n\nmerge")


def test_key_outside_allowed_signers_fails(repo: GitRepo, tmp_path: Path) -> None:
    key, rogue = new_key(tmp_path, "key"), new_key(tmp_path, "rogue")
    commit = write_signed_commit(repo, rogue)
    signers = allowed(tmp_path, key)

    assert verify_commit(repo, signers, commit).returncode != 0
    assert repo.git("-c", f"gpg.ssh.allowedSignersFile={signers}", "log", "-1", "--format=%G?", commit) == "U"


def test_armored_signature_verifies_with_ssh_keygen(tmp_path: Path) -> None:
    key = new_key(tmp_path)
    message = b"any payload\nwith two lines\n"
    signature = tmp_path / "payload.sig"
    armored = sshsig.armored_signature(key, message)
    signature.write_bytes(armored + b"\n")
    signers = allowed(tmp_path, key)

    done = run(
        "ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "w0@test.invalid", "-n", "git", "-s", str(signature),
        stdin=message, check=False,
    )  # fmt: skip
    wrong_namespace = run(
        "ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "w0@test.invalid", "-n", "file", "-s", str(signature),
        stdin=message, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr.decode()
    assert wrong_namespace.returncode != 0
    lines = armored.split(b"\n")
    assert lines[0] == b"-----BEGIN SSH SIGNATURE-----" and lines[-1] == b"-----END SSH SIGNATURE-----"
    assert all(len(line) == 70 for line in lines[1:-2]) and 0 < len(lines[-2]) <= 70


def test_ensure_key_generates_once_then_reuses(tmp_path: Path) -> None:
    state = tmp_path / "state"

    first, generated = sshsig.ensure_key(None, None, state, {})
    second, generated_again = sshsig.ensure_key(None, None, state, {})

    assert (generated, generated_again) == (True, False)
    assert first.fingerprint == second.fingerprint
    assert first.public_line == second.public_line
    assert first.public_line.startswith("ssh-ed25519 AAAA") and first.public_line.endswith(" orlojd-audit")
    private = state / "audit_ed25519"
    assert second.path == private
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (state / "audit_ed25519.pub").read_text() == first.public_line + "\n"
    # ssh-keygen reads the file we wrote and agrees on the fingerprint
    for file in (private, state / "audit_ed25519.pub"):
        assert run("ssh-keygen", "-lf", str(file)).stdout.decode().split()[1] == first.fingerprint


def test_explicit_path_wins_over_credential_and_state(tmp_path: Path) -> None:
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "explicit", "-f", str(tmp_path / "explicit"))

    key, generated = sshsig.ensure_key(tmp_path / "explicit", "audit-key", tmp_path / "state", {})

    assert not generated
    assert key.path == tmp_path / "explicit"
    assert key.public_line.endswith(" explicit")
    assert not (tmp_path / "state").exists()


def test_systemd_credential(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cred", "-f", str(credentials / "audit-key"))

    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    key, generated = sshsig.ensure_key(None, "audit-key", tmp_path / "state", env)

    assert not generated
    assert key.path == credentials / "audit-key"
    expected = run("ssh-keygen", "-lf", str(credentials / "audit-key.pub")).stdout.decode().split()[1]
    assert key.fingerprint == expected
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY") as raised:
        sshsig.ensure_key(None, "audit-key", tmp_path / "state", {})
    assert "LoadCredential=audit-key" in raised.value.hint


def test_fingerprint_and_public_line_match_ssh_keygen(tmp_path: Path) -> None:
    path = tmp_path / "id"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "someone@host", "-f", str(path))

    key = sshsig.load_key(path)

    assert key.fingerprint == run("ssh-keygen", "-lf", str(path)).stdout.decode().split()[1]
    assert key.public_line == path.with_suffix(".pub").read_text().strip()
    assert sshsig.allowed_signers_line(key, "orlojd@host") == (
        'orlojd@host namespaces="git" ' + " ".join(key.public_line.split()[:2])
    )


def test_load_key_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as raised:
        sshsig.load_key(tmp_path / "nope")
    assert str(tmp_path / "nope") in raised.value.message
    assert "ssh-keygen -t ed25519" in raised.value.hint


def test_load_key_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "locked"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(path))

    with pytest.raises(ConfigError, match="passphrase") as raised:
        sshsig.load_key(path)
    assert str(path) in raised.value.message
    assert f"ssh-keygen -p -N '' -f {path}" in raised.value.hint


def test_load_key_rsa(tmp_path: Path) -> None:
    path = tmp_path / "rsa"
    run("ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(path))

    with pytest.raises(ConfigError, match="Ed25519 only") as raised:
        sshsig.load_key(path)
    assert "RSA" in raised.value.message and str(path) in raised.value.message


def test_load_key_not_a_key(tmp_path: Path) -> None:
    path = tmp_path / "garbage"
    path.write_text("hello\n")

    with pytest.raises(ConfigError, match="not an OpenSSH private key"):
        sshsig.load_key(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_load_key_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "key"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path))
    path.chmod(0)

    with pytest.raises(ConfigError, match="not readable"):
        sshsig.load_key(path)


def test_bad_identity_and_principal_are_refused(tmp_path: Path) -> None:
    key = new_key(tmp_path)
    with pytest.raises(ValueError, match="Name <email>"):
        sshsig.signed_commit(key, "0" * 40, [], "no email", WHEN, "m")
    with pytest.raises(ValueError, match="whitespace"):
        sshsig.allowed_signers_line(key, "two words")
