"""Commit signature verification: the gate in front of every apply.

Owns which commits must carry a trusted signature (``VerifyMode``) and the verdict for each
(``SignatureCheck``). Called by the ``orlojd serve`` loop before it applies a new commit; the
loop applies only when ``verify(...).ok`` is true. Fail closed: an unsigned, untrusted or
unverifiable commit, a misconfigured policy and any exception all give ``ok=False``.

git does the cryptography itself — gpg for OpenPGP, ``ssh-keygen -Y`` for SSH — through one
``git log --no-walk --stdin`` per batch. Verdicts come from its ``%G?`` letter and from the
commit's own ``gpgsig`` header, never from the prose gpg or ssh-keygen print. Observed on git
2.39 (why the header is read as well):

* no ``gpg.ssh.allowedSignersFile`` -> SSH-signed commits report ``N``, as if unsigned;
* a missing or empty allowed-signers file, a key outside it, or past ``valid-before`` -> ``U``;
* a key allowed only for another namespace -> ``B``;
* an OpenPGP key imported without ownertrust -> ``U`` (while ``verify-commit`` exits 0!);
* an OpenPGP key missing from the keyring -> ``E``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from orlojd.adapters.gitrepo import read_blobs, resolve_commit, run_git
from orlojd.errors import GitError

MAX_UNBOUNDED_COMMITS = 10_000
GIT_TIMEOUT_SECONDS = 600.0
_FIELD = "\x1f"
_FORMAT = _FIELD.join(["%H", "%G?", "%GF", "%GK", "%GS"])
_ARMOR_KINDS = {
    b"-----BEGIN SSH SIGNATURE-----": "ssh",
    b"-----BEGIN PGP SIGNATURE-----": "openpgp",
    b"-----BEGIN PGP MESSAGE-----": "openpgp",
    b"-----BEGIN SIGNED MESSAGE-----": "x509",
}
_ALLOWED_HINT = (
    "set allowed_signers to an SSH allowed_signers file "
    "(gpg.ssh.allowedSignersFile; lines like 'EMAIL namespaces=\"git\" ssh-ed25519 AAAA...')"
)


class VerifyMode(StrEnum):
    OFF = "off"  # apply anything
    HEAD = "head"  # the commit to apply must be signed by a trusted key
    ALL = "all"  # every commit since the last applied one must be


@dataclass(frozen=True)
class SignatureCheck:
    commit: str  # full id
    ok: bool
    reason: str  # "" when ok; else "<code>: <words>" (unsigned, untrusted, bad, expired, ...)
    signer: str = ""  # key fingerprint and principal / user id when known


@dataclass(frozen=True)
class Verification:
    ok: bool
    checks: tuple[SignatureCheck, ...]

    def first_failure(self) -> SignatureCheck | None:
        return next((check for check in self.checks if not check.ok), None)


@dataclass(frozen=True)
class SignaturePolicy:
    mode: VerifyMode = VerifyMode.OFF
    allowed_signers: Path | None = None  # SSH allowed_signers file (gpg.ssh.allowedSignersFile)
    gnupg_home: Path | None = None  # OpenPGP keyring dir (GNUPGHOME); None = the user's default


def commits_to_verify(repo: Path, mode: VerifyMode, head: str, last_applied: str | None) -> list[str]:
    """Full ids of the commits ``mode`` requires to be signed before ``head`` is applied, oldest first."""
    if mode is VerifyMode.OFF:
        return []
    head_id = resolve_commit(repo, head)
    if mode is VerifyMode.HEAD:
        return [head_id]
    if last_applied is not None:
        base = resolve_commit(repo, last_applied)
        return run_git(repo, "rev-list", "--reverse", f"{base}..{head_id}").decode().split()
    commits = run_git(repo, "rev-list", "--reverse", f"--max-count={MAX_UNBOUNDED_COMMITS + 1}", head_id)
    found = commits.decode().split()
    if len(found) > MAX_UNBOUNDED_COMMITS:
        raise GitError(
            f"signature mode 'all' would verify more than {MAX_UNBOUNDED_COMMITS:,} commits of {repo} "
            "(no commit has been applied yet)",
            "set a starting point: the last trusted commit to verify from, or use signature mode 'head'",
        )
    return found


def verify(repo: Path, policy: SignaturePolicy, head: str, last_applied: str | None) -> Verification:
    """Check the signatures ``policy`` requires for applying ``head``; never raises, fails closed."""
    if policy.mode is VerifyMode.OFF:
        return Verification(ok=True, checks=())
    try:
        commits = commits_to_verify(repo, policy.mode, head, last_applied)
        head_id = resolve_commit(repo, head)
        if head_id not in commits:  # empty range (nothing new, or a rollback): still check what is applied
            commits.append(head_id)
        problem = _config_problem(policy)
        if problem:
            checks = tuple(SignatureCheck(c, False, problem) for c in commits)
        else:
            checks = _check_all(repo, policy, commits)
    except Exception as exc:  # fail closed: whatever went wrong, nothing is applied
        words = " ".join(str(exc).split()) or type(exc).__name__
        return Verification(ok=False, checks=(SignatureCheck(head, False, f"error: {words}"),))
    return Verification(ok=bool(checks) and all(c.ok for c in checks), checks=checks)


def _config_problem(policy: SignaturePolicy) -> str:
    """A configured path that does not exist (git would quietly report every SSH key as ``U``)."""
    if policy.allowed_signers is not None and not policy.allowed_signers.is_file():
        return f"config: allowed_signers file {policy.allowed_signers} does not exist; {_ALLOWED_HINT}"
    if policy.gnupg_home is not None and not policy.gnupg_home.is_dir():
        return (
            f"config: gnupg_home {policy.gnupg_home} is not a directory; "
            "point gnupg_home at the GnuPG keyring (GNUPGHOME) holding the trusted public keys"
        )
    return ""


def _check_all(repo: Path, policy: SignaturePolicy, commits: list[str]) -> tuple[SignatureCheck, ...]:
    letters = _git_letters(repo, policy, commits)
    kinds = {oid: _signature_kind(raw) for oid, raw in read_blobs(repo, commits).items()}
    checks: list[SignatureCheck] = []
    for commit in commits:
        if commit not in letters:
            checks.append(SignatureCheck(commit, False, "error: git reported no signature status for this commit"))
            continue
        letter, fingerprint, key_id, principal = letters[commit]
        signer = " ".join(part for part in (fingerprint or key_id, principal) if part)
        reason = _judge(letter, kinds.get(commit, ""), policy, fingerprint or key_id)
        checks.append(SignatureCheck(commit, not reason, reason, signer))
    return tuple(checks)


def _git_letters(repo: Path, policy: SignaturePolicy, commits: list[str]) -> dict[str, tuple[str, str, str, str]]:
    """commit -> (%G?, %GF, %GK, %GS) for every commit, from one ``git log`` process."""
    config: list[str] = []
    if policy.allowed_signers is not None:
        config = ["-c", f"gpg.ssh.allowedSignersFile={policy.allowed_signers.resolve()}"]
    env = dict(os.environ)
    if policy.gnupg_home is not None:
        env["GNUPGHOME"] = str(policy.gnupg_home.resolve())
    args = ["log", "--no-walk=unsorted", "--stdin", "--no-show-signature", "--no-notes", "-z", f"--format={_FORMAT}"]
    done = subprocess.run(
        ["git", "-C", str(repo), *config, *args],
        input="".join(f"{c}\n" for c in commits).encode(),
        capture_output=True,
        env=env,
        timeout=GIT_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git log failed in {repo}: {lines[-1] if lines else 'exit ' + str(done.returncode)}")
    results: dict[str, tuple[str, str, str, str]] = {}
    for record in done.stdout.decode(errors="replace").split("\0"):
        fields = record.strip("\n").split(_FIELD)
        if len(fields) == 5:
            results[fields[0]] = (fields[1], fields[2], fields[3], fields[4])
    return results


def _signature_kind(raw_commit: bytes) -> str:
    """ "ssh", "openpgp", "x509", "unknown" from the commit's gpgsig header; "" when it has none."""
    headers = raw_commit.split(b"\n\n", 1)[0]
    for line in headers.split(b"\n"):
        name, _, value = line.partition(b" ")
        if name in (b"gpgsig", b"gpgsig-sha256"):
            return next((kind for armor, kind in _ARMOR_KINDS.items() if value.startswith(armor)), "unknown")
    return ""


def _judge(letter: str, kind: str, policy: SignaturePolicy, key: str) -> str:
    """ "" for a good, trusted signature; otherwise the reason code and words."""
    if kind == "ssh" and policy.allowed_signers is None:
        return f"config: commit is SSH-signed but no allowed_signers file is configured; {_ALLOWED_HINT}"
    if letter == "G":
        return ""
    if letter == "N":
        if not kind:
            return "unsigned: commit has no signature"
        return f"unverifiable: git could not check the {kind} signature (is gpg / ssh-keygen installed?)"
    if letter == "B":
        return "bad: signature does not verify (or the key is not allowed for the git namespace)"
    if letter == "U":
        if kind == "ssh":
            return "untrusted: signed by a key not in allowed_signers (or outside its valid-after/valid-before)"
        return (
            f"untrusted: key {key} is in the keyring but not trusted; "
            f"mark it trusted (e.g. 'gpg --quick-lsign-key {key}' or 'gpg --import-ownertrust')"
        )
    if letter == "E":
        where = f"gnupg_home {policy.gnupg_home}" if policy.gnupg_home else "the default GnuPG keyring"
        return f"unverifiable: signing key {key or '(unknown)'} is not in {where}; import its public key there"
    if letter == "X":
        return "expired: the signature has expired"
    if letter == "Y":
        return f"expired: signed by key {key}, which has expired"
    if letter == "R":
        return f"revoked: signed by key {key}, which is revoked"
    return f"error: unexpected signature status {letter!r} from git"
