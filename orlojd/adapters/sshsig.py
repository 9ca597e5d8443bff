"""The daemon's SSH signing key and the SSHSIG signatures git verifies, made in process.

Owns where the audit signing key comes from (``ensure_key``: a configured path, a systemd
credential, or a key generated once under the state directory like an sshd host key), how it
is named to auditors (``public_line``, ``fingerprint``, ``allowed_signers_line``) and the exact
bytes of a signed commit object (``signed_commit``). Called by ``orlojd.adapters.notes`` for
every audit notes commit and by the CLI to print the allowed-signers line.

Why in process: ``git commit-tree -S`` runs ``ssh-keygen -Y sign`` (about 8.6 ms and a key
file ssh-keygen must be able to read); an Ed25519 signature with ``cryptography`` takes about
60 µs and the private key never leaves the daemon. The SSHSIG blob and the ``gpgsig`` header
follow the OpenSSH PROTOCOL.sshsig format; ``git verify-commit`` and ``ssh-keygen -Y verify``
accept the result (tests/integration/test_sshsig.py checks both).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import struct
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orlojd.errors import ConfigError

KEY_TYPE = b"ssh-ed25519"
DEFAULT_KEY_NAME = "audit_ed25519"
DEFAULT_COMMENT = "orlojd-audit"
ARMOR_WIDTH = 70  # what ssh-keygen -Y sign writes
_OPENSSH_MAGIC = b"openssh-key-v1\0"
_IDENT = re.compile(r"[^<>\n]+ <[^<>\n]*>")
_GENERATE_HINT = "ssh-keygen -t ed25519 -N '' -C orlojd-audit -f {path}"


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    public_line: str  # "ssh-ed25519 AAAA... orlojd-audit": what goes in allowed_signers and logs
    fingerprint: str  # "SHA256:..." exactly as ``ssh-keygen -lf`` prints it
    path: Path | None  # where it was loaded from; None for a key that lives only in memory


def _string(data: bytes) -> bytes:
    """SSH wire ``string``: uint32 length, then the bytes."""
    return struct.pack(">I", len(data)) + data


def _public_blob(private: Ed25519PrivateKey) -> bytes:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _string(KEY_TYPE) + _string(raw)


def from_private(private: Ed25519PrivateKey, comment: str = DEFAULT_COMMENT, path: Path | None = None) -> SigningKey:
    """A ``SigningKey`` for an Ed25519 key already in memory."""
    blob = _public_blob(private)
    line = f"{KEY_TYPE.decode()} {base64.b64encode(blob).decode()}"
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return SigningKey(private, f"{line} {comment}" if comment else line, fingerprint, path)


class _Reader:
    """Just enough of the SSH wire format to read an OpenSSH private key file's header and comment."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def uint32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise ValueError("truncated")
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def string(self) -> bytes:
        size = self.uint32()
        if self.pos + size > len(self.data):
            raise ValueError("truncated")
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return value


def _openssh_container(data: bytes) -> tuple[str, bytes] | None:
    """(cipher name, private block) of an OpenSSH-format private key file; None when it is some other format."""
    text = data.decode("ascii", errors="replace")
    begin, end = "-----BEGIN OPENSSH PRIVATE KEY-----", "-----END OPENSSH PRIVATE KEY-----"
    if begin not in text or end not in text:
        return None
    try:
        raw = base64.b64decode("".join(text.split(begin, 1)[1].split(end, 1)[0].split()))
        if not raw.startswith(_OPENSSH_MAGIC):
            return None
        reader = _Reader(raw[len(_OPENSSH_MAGIC) :])
        cipher = reader.string().decode()
        reader.string()  # kdf name
        reader.string()  # kdf options
        for _ in range(reader.uint32()):
            reader.string()  # public keys
        return cipher, reader.string()
    except (ValueError, UnicodeDecodeError):
        return None


def _private_comment(block: bytes) -> str:
    """The comment stored in an unencrypted single-key Ed25519 private block; '' when unreadable."""
    try:
        reader = _Reader(block)
        reader.uint32()  # check integers
        reader.uint32()
        if reader.string() != KEY_TYPE:
            return ""
        reader.string()  # public key
        reader.string()  # private key
        return reader.string().decode()
    except (ValueError, UnicodeDecodeError):
        return ""


def _sibling_comment(path: Path, blob: bytes) -> str:
    """The comment of ``path``.pub when that file holds the same public key; '' otherwise."""
    try:
        fields = path.with_name(path.name + ".pub").read_text().split(maxsplit=2)
    except (OSError, UnicodeDecodeError):
        return ""
    if len(fields) == 3 and fields[1] == base64.b64encode(blob).decode():
        return fields[2].strip()
    return ""


def load_key(path: Path) -> SigningKey:
    """The Ed25519 key in an OpenSSH private key file without a passphrase; ConfigError naming the path and the fix."""
    fix = f"create one with: {_GENERATE_HINT.format(path=path)}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"audit signing key {path} does not exist", fix) from None
    except IsADirectoryError:
        raise ConfigError(f"audit signing key {path} is a directory, not a key file", fix) from None
    except PermissionError:
        raise ConfigError(
            f"audit signing key {path} is not readable by this user",
            f"give the orlojd user read access (chown it, chmod 600 {path}) or point the audit key setting elsewhere",
        ) from None
    except OSError as error:
        raise ConfigError(f"audit signing key {path} cannot be read: {error.strerror}", fix) from None
    container = _openssh_container(data)
    if container is not None and container[0] != "none":
        raise ConfigError(
            f"audit signing key {path} is protected by a passphrase; orlojd signs unattended and cannot ask for it",
            f"remove the passphrase with: ssh-keygen -p -N '' -f {path} (keep the file mode 0600), "
            "or deliver it as a systemd credential",
        )
    try:
        private = serialization.load_ssh_private_key(data, password=None)
    except TypeError:  # cryptography's words for "encrypted, no password given"
        raise ConfigError(
            f"audit signing key {path} is protected by a passphrase; orlojd signs unattended and cannot ask for it",
            f"remove the passphrase with: ssh-keygen -p -N '' -f {path}",
        ) from None
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ConfigError(f"audit signing key {path} is not an OpenSSH private key ({error})", fix) from None
    if not isinstance(private, Ed25519PrivateKey):
        kind = type(private).__name__.removeprefix("_").replace("PrivateKey", "") or "unknown"
        raise ConfigError(
            f"audit signing key {path} holds a key of type {kind}; orlojd signs with Ed25519 only",
            f"replace it with an Ed25519 key: {_GENERATE_HINT.format(path=path)}",
        )
    blob = _public_blob(private)
    comment = (_private_comment(container[1]) if container else "") or _sibling_comment(path, blob)
    return from_private(private, comment, path)


def _generate(path: Path) -> tuple[SigningKey, bool]:
    """A new key at ``path`` (mode 0600) and ``path``.pub, True; if another process won the race, its key, False."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, path)  # atomic, and never replaces a key another process just made
    except FileExistsError:
        return load_key(path), False
    finally:
        os.unlink(temp)
    key = from_private(private, DEFAULT_COMMENT, path)
    public = path.with_name(path.name + ".pub")
    public.write_text(key.public_line + "\n")
    public.chmod(0o644)
    return key, True


def ensure_key(
    explicit: Path | None, credential: str | None, state_dir: Path, env: Mapping[str, str]
) -> tuple[SigningKey, bool]:
    """The audit signing key and whether it was generated just now.

    Order: ``explicit`` (the configured path) wins; else the systemd credential ``credential``
    (``$CREDENTIALS_DIRECTORY/<credential>``, set by ``LoadCredential=``); else
    ``state_dir/audit_ed25519``, generated on first use with mode 0600 plus a ``.pub`` beside it.
    """
    if explicit is not None:
        return load_key(explicit), False
    if credential is not None:
        folder = env.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise ConfigError(
                f"the audit key is set to the systemd credential {credential!r}, but CREDENTIALS_DIRECTORY is not set",
                f"add 'LoadCredential={credential}:/path/to/key' to the orlojd unit, "
                "or set the audit key to a file path instead",
            )
        return load_key(Path(folder) / credential), False
    path = state_dir / DEFAULT_KEY_NAME
    if path.exists():
        return load_key(path), False
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            f"cannot create the state directory {state_dir} for the audit key: {error.strerror}",
            "create it writable by the orlojd user, or set the audit key path",
        ) from None
    try:
        return _generate(path)
    except PermissionError:
        raise ConfigError(
            f"cannot write the audit key into {state_dir}: permission denied",
            "make the state directory writable by the orlojd user, or set the audit key path",
        ) from None


def armored_signature(key: SigningKey, message: bytes, namespace: bytes = b"git") -> bytes:
    """An armored SSHSIG signature of ``message`` (``-----BEGIN SSH SIGNATURE-----``, base64 at 70 columns)."""
    digest = hashlib.sha512(message).digest()
    signed = b"SSHSIG" + _string(namespace) + _string(b"") + _string(b"sha512") + _string(digest)
    blob = (
        b"SSHSIG"
        + struct.pack(">I", 1)
        + _string(_public_blob(key.private))
        + _string(namespace)
        + _string(b"")
        + _string(b"sha512")
        + _string(_string(KEY_TYPE) + _string(key.private.sign(signed)))
    )
    text = base64.b64encode(blob)
    lines = [text[i : i + ARMOR_WIDTH] for i in range(0, len(text), ARMOR_WIDTH)]
    return b"\n".join([b"-----BEGIN SSH SIGNATURE-----", *lines, b"-----END SSH SIGNATURE-----"])


def signed_commit(key: SigningKey, tree: str, parents: Sequence[str], ident: str, when: int, message: str) -> bytes:
    """The raw commit object, signed in a ``gpgsig`` header: what ``git hash-object -t commit -w --stdin`` stores.

    ``ident`` is "Name <email>", used as author and committer at ``when`` (Unix seconds, UTC);
    ``message`` gets a final newline when it has none, as ``git commit-tree -m`` would add.
    """
    if not _IDENT.fullmatch(ident):
        raise ValueError(f"identity {ident!r} must look like 'Name <email>' (no newline, no other '<' or '>')")
    for oid in (tree, *parents):
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", oid):
            raise ValueError(f"{oid!r} is not a full object id")
    header = (
        f"tree {tree}\n"
        + "".join(f"parent {parent}\n" for parent in parents)
        + f"author {ident} {when} +0000\ncommitter {ident} {when} +0000\n"
    ).encode()
    body = message.encode() if message.endswith("\n") else (message + "\n").encode()
    signature = armored_signature(key, header + b"\n" + body)
    return header + b"gpgsig " + signature.replace(b"\n", b"\n ") + b"\n\n" + body


def allowed_signers_line(key: SigningKey, principal: str) -> str:
    """'PRINCIPAL namespaces="git" ssh-ed25519 AAAA...': the line an auditor puts in gpg.ssh.allowedSignersFile."""
    if not principal or any(c.isspace() for c in principal):
        raise ValueError(f"principal {principal!r} must be non-empty and contain no whitespace (e.g. orlojd@host)")
    key_type, key_data = key.public_line.split()[:2]
    return f'{principal} namespaces="git" {key_type} {key_data}'
