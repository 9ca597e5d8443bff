"""Secret values at call time: a ``Secret`` manifest (a reference, never a value in git) resolved to its value.

This module owns reading a Secret's value where it lives: an environment variable of the process
(``env``), a file (``file``; one trailing newline stripped), a systemd credential
(``systemdCredential``: ``$CREDENTIALS_DIRECTORY/<name>``, set by ``LoadCredential=`` in the unit). A
literal ``stringData`` / ``data`` value is never resolved: the store keeps only its sha256.

``SecretResolver(store, env)`` looks the Secret up in the applied inventory and resolves it; every
failure is a ``SecretError`` that names the Secret and where its value should be, never the value.
Values are read per call, so a rotated file or credential is used from the next call on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from orlojd.adapters.store import Store
from orlojd.core.keys import ResourceKey
from orlojd.core.manifests.base import split_ref
from orlojd.core.manifests.registry import validate_object
from orlojd.core.manifests.tools import Secret, SecretSpec

__all__ = ["SecretError", "SecretResolver", "value_of"]


class SecretError(ValueError):
    """A Secret that cannot be read: what is missing and where to put it (never the value)."""


def value_of(key: ResourceKey, spec: SecretSpec, env: Mapping[str, str]) -> str:
    """The value of the Secret ``key`` with ``spec``, read from ``env`` or the file system."""
    where = f"secret {key.namespace}/{key.name}"
    if spec.env is not None:
        found = env.get(spec.env)
        if not found:
            raise SecretError(
                f"{where}: environment variable {spec.env} is not set; set it in the daemon's environment "
                f"(systemd: Environment= or EnvironmentFile=)"
            )
        return found
    if spec.file is not None:
        return _read(Path(spec.file), where, "check the path and that the daemon's user may read it")
    if spec.systemd_credential is not None:
        folder = env.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise SecretError(
                f"{where}: systemd credential {spec.systemd_credential!r} asked for, but CREDENTIALS_DIRECTORY is "
                f"not set; add LoadCredential={spec.systemd_credential}:/path/to/file to the unit"
            )
        return _read(Path(folder) / spec.systemd_credential, where, f"check LoadCredential={spec.systemd_credential}")
    raise SecretError(
        f"{where}: a literal stringData/data value is never kept by orlojd (the store holds only its sha256); "
        "move the value to env, file or systemdCredential"
    )


def _read(path: Path, where: str, hint: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(f"{where}: cannot read {path}: {exc.strerror}; {hint}") from None
    text = text[:-1] if text.endswith("\n") else text
    if not text:
        raise SecretError(f"{where}: {path} is empty")
    return text


class SecretResolver:
    """Resolves ``secretRef`` names against the applied inventory (``ref`` is ``name`` or ``ns/name``)."""

    def __init__(self, store: Store, env: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.env = os.environ if env is None else env

    def __call__(self, ref: str, namespace: str = "default") -> str:
        key = ResourceKey("Secret", *split_ref(ref, namespace))
        body = self.store.inventory_bodies_some(keys=[key]).get(key)
        if body is None:
            raise SecretError(
                f"secret {key.namespace}/{key.name} is not applied; "
                "add a Secret manifest (env, file or systemdCredential)"
            )
        checked = validate_object(body)
        if not isinstance(checked.obj, Secret):
            raise SecretError(f"applied secret {key.namespace}/{key.name} no longer validates")
        return value_of(key, checked.obj.spec, self.env)
