"""SSH signatures on approvals: the bytes an approver signs, signing them, and checking them.

Owns the canonical approval message (``approval_message``), signing it with the approver's own
SSH key (``sign``, behind ``orlojd approve ID --sign-with KEY``) and checking a signature
against an OpenSSH allowed_signers file (``verify``). Callers store the armored signature next to
the vote and call ``verify`` before they count it.

The cryptography is the real ``ssh-keygen -Y`` (namespace ``orlojd-approval``); every verdict
comes from its exit codes (0 = yes, anything else = no), never from its prose. Verification
fails closed and runs three checks, so the reason in ``SignatureRejected`` says which one failed:

1. ``ssh-keygen -Y check-novalidate``: the signature parses, is over these exact bytes and is for
   our namespace (no trust involved) -> else ``bad_signature``;
2. ``ssh-keygen -Y find-principals``: the key is listed in allowed_signers and inside its
   valid-after/valid-before window -> else ``untrusted_key``;
3. ``ssh-keygen -Y verify -I PRINCIPAL`` for each principal found, in ssh-keygen's order; the
   first that verifies is the signer -> else ``key_not_permitted`` (e.g. ``namespaces="git"``).

Observed with OpenSSH 9.2 (why all three run): ``find-principals`` ignores ``-n`` and does not
check the signature at all (a tampered message or a ``git``-namespace signature still finds
the principal) and reports the principals of the *first* line listing the key only — a
``namespaces="git"`` line above the ``orlojd-approval`` line for the same key makes ``verify``
reject (fail closed; put the approval line first or list both namespaces on one line); a
missing allowed_signers file, a key not in it, an expired key and a garbage
signature all give the same ``verify`` exit code 255; ``sign`` asks ``Overwrite (y/n)?`` when
``FILE.sig`` exists and reads a passphrase from stdin when there is no terminal — hence a fresh
temporary directory per call, stdin from /dev/null, a new session (no controlling terminal) and
``SSH_ASKPASS_REQUIRE=never``, so it can never prompt.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orlojd.errors import ConfigError, OrlojError

NAMESPACE = "orlojd-approval"  # the ssh-keygen -n namespace
MESSAGE_VERSION = "orlojd approval v1"
VERDICTS = ("approve", "deny")
SSH_KEYGEN_TIMEOUT_SECONDS = 30.0
_ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
_ARMOR_END = "-----END SSH SIGNATURE-----"
_FINGERPRINT = re.compile(r"\bSHA256:[A-Za-z0-9+/]{43}(?![A-Za-z0-9+/])")
_ALLOWED_LINE_HINT = f"lines like 'alice@example.com namespaces=\"{NAMESPACE}\" ssh-ed25519 AAAA...'"


@dataclass(frozen=True)
class VerifiedSignature:
    principal: str  # the allowed_signers principal the key belongs to
    fingerprint: str  # SHA256:... of the key if available from ssh-keygen output, else ""


class SignatureRejected(OrlojError):
    """An approval signature did not verify; ``reason`` is the machine-readable code.

    Codes: ``no_allowed_signers``, ``bad_signature``, ``untrusted_key``, ``key_not_permitted``,
    ``unverifiable`` (ssh-keygen missing or timed out).
    """

    def __init__(self, reason: str, words: str, hint: str = "") -> None:
        super().__init__(f"approval signature rejected ({reason}): {words}", hint)
        self.reason = reason


def approval_message(approval_id: str, digest: str, verdict: str, approver: str) -> bytes:
    """The canonical bytes that are signed: a versioned, line-based UTF-8 text.

    ``b"orlojd approval v1\\nid <id>\\ndigest <digest>\\nverdict <approve|deny>\\napprover <approver>\\n"``.
    Pure. Raises ValueError for an empty field, a field with a line break (which could forge
    another line) or a verdict other than ``approve`` / ``deny``.
    """
    fields = {"id": approval_id, "digest": digest, "verdict": verdict, "approver": approver}
    for name, value in fields.items():
        if not value:
            raise ValueError(f"approval {name} must not be empty")
        if "\n" in value or "\r" in value:
            raise ValueError(f"approval {name} must not contain a line break: {value!r}")
    if verdict not in VERDICTS:
        raise ValueError(f"approval verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    lines = [MESSAGE_VERSION, *(f"{name} {value}" for name, value in fields.items())]
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def sign(message: bytes, key: Path) -> str:
    """Sign ``message`` with ``ssh-keygen -Y sign -f KEY -n orlojd-approval``; the armored signature text.

    ``key`` is the private key file, or its ``.pub`` when an ssh-agent (``SSH_AUTH_SOCK``) holds
    the private key; ssh-keygen uses the agent whenever it holds the key. Never prompts: a key
    with a passphrase must be in the agent. Every failure raises ConfigError naming the key.
    """
    if not key.is_file():
        raise ConfigError(
            f"signing key {key} does not exist (or is not a file)",
            "pass --sign-with the path of your SSH private key (e.g. ~/.ssh/id_ed25519), "
            "or of its .pub when ssh-agent holds the key",
        )
    if not os.access(key, os.R_OK):
        raise ConfigError(f"signing key {key} is not readable", f"check the permissions of {key}")
    with tempfile.TemporaryDirectory(prefix="orlojd-sign-") as folder:
        payload = Path(folder) / "approval"
        payload.write_bytes(message)
        args = ["ssh-keygen", "-Y", "sign", "-f", str(key), "-n", NAMESPACE, str(payload)]
        try:
            done = _run(args, stdin=None)
        except FileNotFoundError:
            raise ConfigError(
                "ssh-keygen is not installed; it is needed to sign approvals",
                "install OpenSSH's client tools (Debian/Ubuntu: apt-get install openssh-client)",
            ) from None
        except subprocess.TimeoutExpired:
            raise ConfigError(
                f"ssh-keygen did not finish signing with {key} within {SSH_KEYGEN_TIMEOUT_SECONDS:g}s",
                "check that ssh-agent (SSH_AUTH_SOCK) answers, or sign with an unencrypted key file",
            ) from None
        except OSError as exc:
            raise ConfigError(f"could not run ssh-keygen: {exc}", "check that ssh-keygen is executable") from None
        signature_file = payload.with_name("approval.sig")
        if done.returncode != 0 or not signature_file.is_file():
            raise ConfigError(
                f"ssh-keygen could not sign with {key} (exit {done.returncode}): {_last_line(done.stderr)}",
                f"if the key has a passphrase, load it into ssh-agent first ('ssh-add {key}'); "
                "if you passed a .pub, the agent must hold its private key ('ssh-add -l' lists them)",
            )
        return signature_file.read_text(encoding="ascii")


def verify(message: bytes, signature: str, allowed_signers: Path) -> VerifiedSignature:
    """Check that ``signature`` is a signature over ``message`` by a key trusted for approvals.

    Trusted = listed in ``allowed_signers`` for namespace ``orlojd-approval`` (or without a
    ``namespaces=`` restriction) and inside its valid-after/valid-before window at the time of the
    check. When the key's line lists several principals, each is tried in ssh-keygen's order and
    the first that verifies is returned; only the first line listing the key counts (ssh-keygen's
    find-principals stops there). Fails closed: anything else raises SignatureRejected.
    """
    _check_allowed_signers(allowed_signers)
    text = signature.strip()
    if not (text.startswith(_ARMOR_BEGIN) and text.endswith(_ARMOR_END)):
        raise SignatureRejected(
            "bad_signature",
            "not an SSH signature (no '-----BEGIN SSH SIGNATURE-----' armor)",
            "sign again with 'orlojd approve ID --sign-with KEY'",
        )
    with tempfile.TemporaryDirectory(prefix="orlojd-verify-") as folder:
        sig_file = Path(folder) / "approval.sig"
        sig_file.write_text(text + "\n", encoding="ascii", errors="replace")
        sig, allowed = str(sig_file), str(allowed_signers)
        checked = _verify_run(["ssh-keygen", "-Y", "check-novalidate", "-n", NAMESPACE, "-s", sig], message)
        if checked.returncode != 0:
            raise SignatureRejected(
                "bad_signature",
                f"the signature does not match this approval (tampered message, other id/digest/verdict, "
                f"a namespace other than {NAMESPACE!r}, or a corrupt signature)",
                "sign the approval again with 'orlojd approve ID --sign-with KEY'",
            )
        found = _verify_run(["ssh-keygen", "-Y", "find-principals", "-s", sig, "-f", allowed, "-n", NAMESPACE], None)
        principals = [line.strip() for line in found.stdout.decode(errors="replace").splitlines() if line.strip()]
        if found.returncode != 0 or not principals:
            raise SignatureRejected(
                "untrusted_key",
                f"the signing key is not listed in {allowed_signers} (or is outside its valid-after/valid-before)",
                f"add the approver's public key to {allowed_signers} ({_ALLOWED_LINE_HINT})",
            )
        for principal in principals:
            args = ["ssh-keygen", "-Y", "verify", "-f", allowed, "-I", principal, "-n", NAMESPACE, "-s", sig]
            done = _verify_run(args, message)
            if done.returncode == 0:
                match = _FINGERPRINT.search(done.stdout.decode(errors="replace"))
                return VerifiedSignature(principal=principal, fingerprint=match.group(0) if match else "")
        raise SignatureRejected(
            "key_not_permitted",
            f"the key of {', '.join(principals)} is in {allowed_signers} but not permitted for namespace "
            f"{NAMESPACE!r} (its namespaces= option) or not valid now",
            f'list {NAMESPACE} in the namespaces="..." option of the first line for this key in '
            f"{allowed_signers} (ssh-keygen -Y find-principals reads only the first line listing a key)",
        )


def _check_allowed_signers(allowed_signers: Path) -> None:
    """A missing, unreadable or empty file would reject everything anyway; say so plainly."""
    hint = f"point allowed_signers at an OpenSSH allowed_signers file ({_ALLOWED_LINE_HINT})"
    try:
        content = allowed_signers.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise SignatureRejected(
            "no_allowed_signers", f"allowed_signers file {allowed_signers} does not exist", hint
        ) from None
    except OSError as exc:
        raise SignatureRejected(
            "no_allowed_signers", f"allowed_signers file {allowed_signers} cannot be read: {exc.strerror}", hint
        ) from None
    if not any(line.strip() and not line.lstrip().startswith("#") for line in content.splitlines()):
        raise SignatureRejected("no_allowed_signers", f"allowed_signers file {allowed_signers} lists no keys", hint)


def _verify_run(args: list[str], stdin: bytes | None) -> subprocess.CompletedProcess[bytes]:
    try:
        return _run(args, stdin)
    except FileNotFoundError:
        raise SignatureRejected(
            "unverifiable",
            "ssh-keygen is not installed; approval signatures cannot be checked",
            "install OpenSSH's client tools (Debian/Ubuntu: apt-get install openssh-client)",
        ) from None
    except subprocess.TimeoutExpired:
        raise SignatureRejected(
            "unverifiable", f"ssh-keygen did not answer within {SSH_KEYGEN_TIMEOUT_SECONDS:g}s", "try again"
        ) from None
    except OSError as exc:
        raise SignatureRejected("unverifiable", f"could not run ssh-keygen: {exc}", "check ssh-keygen") from None


def _run(args: list[str], stdin: bytes | None) -> subprocess.CompletedProcess[bytes]:
    """ssh-keygen with ``stdin`` piped in (or /dev/null), no terminal and no askpass: it cannot prompt."""
    return subprocess.run(
        args,
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        env={**os.environ, "SSH_ASKPASS_REQUIRE": "never"},
        start_new_session=True,
        timeout=SSH_KEYGEN_TIMEOUT_SECONDS,
        check=False,
    )


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"
