"""Settings: orlojd.yaml at the repository root, as a tree of small pydantic groups.

Loaded once by the CLI and passed down; no other module reads files or the
environment for configuration. Unknown keys are errors, with file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orlojd.core.desired import locate
from orlojd.core.diagnostics import Diagnostic
from orlojd.core.documents import parse_file
from orlojd.core.durations import Duration
from orlojd.core.manifests.registry import problems_from_validation
from orlojd.errors import ConfigError

CONFIG_FILE = "orlojd.yaml"


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RepoSettings(Group):
    branch: str = "main"
    path: str = Field(default=".", description="Folder (inside the repository) that holds the manifests")
    require_signed_commits: Annotated[bool, Field(alias="requireSignedCommits")] = False


class StoreSettings(Group):
    url: str | None = Field(default=None, description="Database URL; default: SQLite in stateDir")


class SecretSettings(Group):
    allow_literal: Annotated[bool, Field(alias="allowLiteral")] = False


class PruneSettings(Group):
    enabled: bool = False
    max_delete_percent: Annotated[int, Field(alias="maxDeletePercent", ge=0, le=100)] = 25
    max_delete_count: Annotated[int, Field(alias="maxDeleteCount", ge=0)] = 50


class WorkerSettings(Group):
    """The worker pool embedded in `orlojd serve` (read when the pool starts) and the queue's thresholds."""

    size: Annotated[int, Field(ge=0, le=256, description="Worker threads in orlojd serve; 0: none")] = 4
    labels: dict[str, str] = Field(default_factory=dict, description="Labels the embedded workers offer")
    lease: Duration = Field(default="30s", description="Task lease; renewed every third of it")
    queue_wait_warning: Annotated[Duration, Field(alias="queueWaitWarning")] = Field(
        default="5m", description="A task pending longer than this gets the QueueWaitExceeded condition"
    )


class ApprovalSettings(Group):
    webhook: str | None = Field(default=None, description="URL that gets each approval request as a JSON POST")
    allowed_signers: Annotated[str | None, Field(alias="allowedSigners")] = Field(
        default=None,
        description="OpenSSH allowed_signers file that orlojd approve --sign-with signatures must match",
    )


class AuditSettings(Group):
    allowed_signers: Annotated[str | None, Field(alias="allowedSigners")] = Field(
        default=None,
        description="allowed_signers file orlojd audit verify trusts (default: the daemon's own key)",
    )


class LogSettings(Group):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(Group):
    """Everything orlojd.yaml can say. Every key is optional."""

    state_dir: Annotated[str, Field(alias="stateDir")] = ".orlojd"
    repo: RepoSettings = Field(default_factory=RepoSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    secrets: SecretSettings = Field(default_factory=SecretSettings)
    prune: PruneSettings = Field(default_factory=PruneSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)


def parse_settings(display: str, content: bytes) -> tuple[Settings | None, list[Diagnostic]]:
    """Settings from the bytes of an orlojd.yaml; every problem as a Diagnostic with its line."""
    documents, diagnostics = parse_file(display, content)
    if diagnostics:
        return None, diagnostics
    if not documents:
        return Settings(), []
    document = documents[0]
    try:
        return Settings.model_validate(document.data), []
    except ValidationError as exc:
        return None, [
            locate(document.source, document.index, problem, "", "")
            for problem in problems_from_validation(exc, Settings)
        ]


def load_settings(root: Path) -> Settings:
    """Settings from ``root/orlojd.yaml``; defaults when the file is absent."""
    path = root / CONFIG_FILE
    if not path.is_file():
        return Settings()
    settings, found = parse_settings(str(path), path.read_bytes())
    if settings is None:
        raise ConfigError("\n".join(d.format() for d in found), "see the comments in orlojd.yaml")
    return settings


__all__ = ["CONFIG_FILE", "Settings", "load_settings", "parse_settings"]
