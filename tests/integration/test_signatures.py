"""Commit signature verification against real repositories, real keys, real git.

SSH keys come from ``ssh-keygen``, OpenPGP keys from ``gpg`` in throw-away GNUPGHOMEs; every
commit is made by git with the fixed identity of tests/conftest.py. The checks go through
``orlojd.adapters.signatures`` exactly as the serve loop calls it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from orlojd.adapters import signatures
from orlojd.adapters.signatures import SignaturePolicy, VerifyMode, commits_to_verify, verify
from orlojd.errors import GitError

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


class GitRepo(Protocol):
    """The ``repo`` fixture (tests/conftest.py): a real repository in tmp_path."""

    path: Path

    def commit(self, message: str = "change") -> str: ...

    def git(self, *args: str) -> str: ...


def run(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        list(args), input=stdin, capture_output=True, env={**os.environ, **GIT_ENV, **(env or {})}, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)} failed: {done.stderr.decode(errors='replace')}"
    return done.stdout.decode().strip()


@dataclass(frozen=True)
class SshKey:
    private: Path
    public_line: str  # "ssh-ed25519 AAAA..."
    fingerprint: str  # "SHA256:..."


def make_ssh_key(folder: Path, name: str) -> SshKey:
    private = folder / name
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(private))
    public_line = " ".join(private.with_suffix(".pub").read_text().split()[:2])
    fingerprint = run("ssh-keygen", "-l", "-E", "sha256", "-f", str(private.with_suffix(".pub"))).split()[1]
    return SshKey(private, public_line, fingerprint)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[SshKey, SshKey]:
    """(trusted, rogue): two ed25519 keys, made once for the module."""
    folder = tmp_path_factory.mktemp("ssh")
    return make_ssh_key(folder, "trusted"), make_ssh_key(folder, "rogue")


@pytest.fixture
def allowed(tmp_path: Path, keys: tuple[SshKey, SshKey]) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_text(f'signer@example.invalid namespaces="git" {keys[0].public_line}\n')
    return path


def ssh_commit(repo: GitRepo, key: SshKey, message: str) -> str:
    signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key.private}.pub"]
    repo.git(*signing, "commit", "--quiet", "--allow-empty", "-S", "-m", message)
    return repo.git("rev-parse", "HEAD")


@dataclass(frozen=True)
class GpgKey:
    home: Path  # GNUPGHOME holding the secret key (ultimately trusted, as gpg made it)
    fingerprint: str


def gpg_home(folder: Path) -> Path:
    folder.mkdir(mode=0o700)
    return folder


def kill_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)


@pytest.fixture(scope="module")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKey]:
    home = gpg_home(tmp_path_factory.mktemp("gpg") / "home")
    env = {"GNUPGHOME": str(home)}
    uid = "Test <t@example.invalid>"
    try:
        run("gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", uid, "ed25519",
            "sign", "never", env=env)  # fmt: skip
        listing = run("gpg", "--batch", "--with-colons", "--list-secret-keys", env=env)
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        yield GpgKey(home, fingerprint)
    finally:
        kill_agent(home)


def gpg_commit(repo: GitRepo, key: GpgKey, message: str) -> str:
    signing = ["-c", "gpg.program=gpg", "-c", f"user.signingkey={key.fingerprint}"]
    env = {"GNUPGHOME": str(key.home)}
    run("git", "-C", str(repo.path), *signing, "commit", "--quiet", "--allow-empty", "-S", "-m", message, env=env)
    return repo.git("rev-parse", "HEAD")


def ssh_policy(mode: VerifyMode, allowed: Path | None) -> SignaturePolicy:
    return SignaturePolicy(mode=mode, allowed_signers=allowed)


# --- mode off and head ------------------------------------------------------------------------


def test_mode_off_passes_unsigned_commits_without_checking(repo: GitRepo) -> None:
    base = repo.commit("base")
    head = repo.commit("unsigned")

    result = verify(repo.path, SignaturePolicy(), head, base)

    assert result.ok and result.checks == () and result.first_failure() is None
    assert commits_to_verify(repo.path, VerifyMode.OFF, head, None) == []


def test_head_signed_by_an_allowed_ssh_key_passes(repo: GitRepo, keys: tuple[SshKey, SshKey], allowed: Path) -> None:
    repo.commit("unsigned history is not checked in head mode")
    head = ssh_commit(repo, keys[0], "signed")

    result = verify(repo.path, ssh_policy(VerifyMode.HEAD, allowed), "HEAD", None)

    assert result.ok, result.first_failure()
    [check] = result.checks
    assert (check.commit, check.ok, check.reason) == (head, True, "")
    assert keys[0].fingerprint in check.signer and "signer@example.invalid" in check.signer


def test_unsigned_head_is_refused(repo: GitRepo, allowed: Path) -> None:
    head = repo.commit("unsigned")

    result = verify(repo.path, ssh_policy(VerifyMode.HEAD, allowed), head, None)

    failure = result.first_failure()
    assert not result.ok and failure is not None
    assert failure.commit == head and failure.reason.startswith("unsigned:")


def test_head_signed_by_a_key_not_in_allowed_signers_is_refused(
    repo: GitRepo, keys: tuple[SshKey, SshKey], allowed: Path
) -> None:
    head = ssh_commit(repo, keys[1], "signed by the rogue key")

    result = verify(repo.path, ssh_policy(VerifyMode.HEAD, allowed), head, None)

    failure = result.first_failure()
    assert not result.ok and failure is not None
    assert failure.reason.startswith("untrusted:") and "allowed_signers" in failure.reason
    assert failure.signer == keys[1].fingerprint


def test_commit_edited_after_signing_is_refused_as_bad(
    repo: GitRepo, keys: tuple[SshKey, SshKey], allowed: Path
) -> None:
    signed = ssh_commit(repo, keys[0], "approved")
    raw = repo.git("cat-file", "commit", signed).replace("approved", "tampered")
    forged = run("git", "-C", str(repo.path), "hash-object", "-t", "commit", "-w", "--stdin", stdin=f"{raw}\n".encode())

    result = verify(repo.path, ssh_policy(VerifyMode.HEAD, allowed), forged, None)

    failure = result.first_failure()
    assert not result.ok and failure is not None
    assert failure.commit == forged and failure.reason.startswith("bad:")


# --- mode all ---------------------------------------------------------------------------------


def test_all_mode_refuses_an_unsigned_commit_in_the_middle_and_names_it(
    repo: GitRepo, keys: tuple[SshKey, SshKey], allowed: Path
) -> None:
    applied = repo.commit("already applied, unsigned: outside the range")
    first = ssh_commit(repo, keys[0], "signed 1")
    sneaked = repo.commit("unsigned in the middle")
    head = ssh_commit(repo, keys[0], "signed 2")

    assert commits_to_verify(repo.path, VerifyMode.ALL, head, applied) == [first, sneaked, head]
    assert verify(repo.path, ssh_policy(VerifyMode.HEAD, allowed), head, applied).ok  # head alone looks fine
    result = verify(repo.path, ssh_policy(VerifyMode.ALL, allowed), head, applied)

    assert not result.ok
    assert [c.commit for c in result.checks] == [first, sneaked, head]
    assert [c.ok for c in result.checks] == [True, False, True]
    failure = result.first_failure()
    assert failure is not None and failure.commit == sneaked and failure.reason.startswith("unsigned:")


def test_all_mode_passes_when_every_new_commit_is_signed(
    repo: GitRepo, keys: tuple[SshKey, SshKey], allowed: Path
) -> None:
    applied = repo.commit("already applied")
    ssh_commit(repo, keys[0], "signed 1")
    head = ssh_commit(repo, keys[0], "signed 2")

    result = verify(repo.path, ssh_policy(VerifyMode.ALL, allowed), head, applied)

    assert result.ok and len(result.checks) == 2
    # Nothing new since the last apply: the commit to apply is still checked, never waved through.
    unsigned = repo.commit("unsigned")
    again = verify(repo.path, ssh_policy(VerifyMode.ALL, allowed), unsigned, unsigned)
    assert not again.ok and [c.commit for c in again.checks] == [unsigned]


def test_all_mode_without_a_starting_point_walks_every_ancestor_up_to_a_cap(
    repo: GitRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = [repo.commit(f"c{i}") for i in range(3)]

    assert commits_to_verify(repo.path, VerifyMode.ALL, commits[-1], None) == commits
    assert commits_to_verify(repo.path, VerifyMode.HEAD, "HEAD", None) == [commits[-1]]
    monkeypatch.setattr(signatures, "MAX_UNBOUNDED_COMMITS", 2)
    with pytest.raises(GitError) as raised:
        commits_to_verify(repo.path, VerifyMode.ALL, commits[-1], None)
    assert "starting point" in raised.value.hint
    result = verify(repo.path, SignaturePolicy(mode=VerifyMode.ALL), commits[-1], None)
    assert not result.ok and result.checks[0].reason.startswith("error:")


# --- misconfiguration and errors: refused, never raised -----------------------------------------


@pytest.mark.parametrize("configured", ["nothing", "missing file"])
def test_ssh_signature_without_an_allowed_signers_file_is_refused_with_a_hint(
    repo: GitRepo, keys: tuple[SshKey, SshKey], tmp_path: Path, configured: str
) -> None:
    head = ssh_commit(repo, keys[0], "signed")
    allowed = None if configured == "nothing" else tmp_path / "no-such-allowed_signers"

    result = verify(repo.path, ssh_policy(VerifyMode.HEAD, allowed), head, None)

    failure = result.first_failure()
    assert not result.ok and failure is not None and failure.commit == head
    assert failure.reason.startswith("config:")
    assert "allowed_signers" in failure.reason and "gpg.ssh.allowedSignersFile" in failure.reason


def test_unknown_revision_fails_closed_with_an_error_reason(repo: GitRepo, allowed: Path) -> None:
    repo.commit("base")

    result = verify(repo.path, ssh_policy(VerifyMode.HEAD, allowed), "no-such-branch", None)

    assert not result.ok
    failure = result.first_failure()
    assert failure is not None and failure.reason.startswith("error:") and "no-such-branch" in failure.reason


# --- OpenPGP ----------------------------------------------------------------------------------


def test_openpgp_signature_verifies_with_the_policy_keyring(repo: GitRepo, gpg_key: GpgKey) -> None:
    head = gpg_commit(repo, gpg_key, "signed with gpg")

    result = verify(repo.path, SignaturePolicy(mode=VerifyMode.HEAD, gnupg_home=gpg_key.home), head, None)

    assert result.ok, result.first_failure()
    assert result.checks[0].commit == head and gpg_key.fingerprint in result.checks[0].signer
    assert "GNUPGHOME" not in os.environ or os.environ["GNUPGHOME"] != str(gpg_key.home)


def test_openpgp_signature_by_a_key_outside_the_keyring_is_refused(
    repo: GitRepo, gpg_key: GpgKey, tmp_path: Path
) -> None:
    head = gpg_commit(repo, gpg_key, "signed with gpg")
    empty = gpg_home(tmp_path / "empty-keyring")

    try:
        result = verify(repo.path, SignaturePolicy(mode=VerifyMode.HEAD, gnupg_home=empty), head, None)
    finally:
        kill_agent(empty)

    failure = result.first_failure()
    assert not result.ok and failure is not None
    assert failure.reason.startswith("unverifiable:") and str(empty) in failure.reason


def test_openpgp_key_imported_without_trust_is_refused_as_untrusted(
    repo: GitRepo, gpg_key: GpgKey, tmp_path: Path
) -> None:
    head = gpg_commit(repo, gpg_key, "signed with gpg")
    keyring = gpg_home(tmp_path / "imported")
    public = run("gpg", "--batch", "--armor", "--export", gpg_key.fingerprint, env={"GNUPGHOME": str(gpg_key.home)})
    try:
        run("gpg", "--batch", "--import", env={"GNUPGHOME": str(keyring)}, stdin=public.encode())
        result = verify(repo.path, SignaturePolicy(mode=VerifyMode.HEAD, gnupg_home=keyring), head, None)
    finally:
        kill_agent(keyring)

    failure = result.first_failure()
    assert not result.ok and failure is not None  # `git verify-commit` itself exits 0 here
    assert failure.reason.startswith("untrusted:") and gpg_key.fingerprint in failure.reason
