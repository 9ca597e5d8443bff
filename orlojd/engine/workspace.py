"""A workspace: the manifests folder, its git repository, its settings and its state store URL."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orlojd.adapters import gitrepo
from orlojd.adapters.store import Store, sqlite_url
from orlojd.core.keys import ResourceKey
from orlojd.settings import Settings, load_settings


@dataclass(frozen=True)
class Workspace:
    path: Path
    repo: Path
    prefix: str
    settings: Settings
    db_url: str

    def open_store(self) -> Store:
        return Store.open(self.db_url)


def open_workspace(path: Path, db: str | None = None, state_dir_option: Path | None = None) -> Workspace:
    """Find the repository around ``path``, read orlojd.yaml there, pick the store URL.

    The store is ``--db`` if given, else ``--state-dir``/state.db, else store.url from
    orlojd.yaml, else state.db in the state folder orlojd.yaml names (default .orlojd/).
    """
    repo, prefix = gitrepo.locate_repo(path)
    folder = path if path.is_dir() else path.parent
    settings = load_settings(folder)
    state_dir = Path(settings.state_dir)
    if not state_dir.is_absolute():
        state_dir = (folder / state_dir).resolve()
    if state_dir_option is not None:
        url = db or sqlite_url(state_dir_option.resolve())
    else:
        url = db or settings.store.url or sqlite_url(state_dir)
    return Workspace(path, repo, prefix, settings, url)


def store_url(path: Path, db: str | None, state_dir: Path | None) -> str:
    """The store a command reads: ``--db``, else ``--state-dir``/state.db (no repository needed),
    else the one the repository around ``path`` names."""
    if db is not None:
        return db
    if state_dir is not None:
        return sqlite_url(state_dir.resolve())
    return open_workspace(path).db_url


def fingerprint(digests: Mapping[ResourceKey, str], applied: str | None) -> str:
    """sha256 over the applied revision and every (identity, digest): moves whenever the inventory does."""
    lines = [f"revision={applied or ''}", *sorted(f"{key}={digest}" for key, digest in digests.items())]
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()
