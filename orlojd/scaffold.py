"""`orlojd init`: a new git repository with a working example set and a first commit."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from orlojd.adapters.gitrepo import identity_args, run_git
from orlojd.errors import UsageError
from orlojd.schema import write_schemas

_RENAMES = {"gitignore": ".gitignore", "orlojignore": ".orlojignore"}
COMMIT_MESSAGE = "orlojd init: compliance-checker demo"


def _copy_templates(target: Path) -> None:
    source = resources.files("orlojd") / "templates" / "demo"
    with resources.as_file(source) as folder:
        for item in sorted(Path(folder).rglob("*")):
            if item.is_dir() or "__pycache__" in item.parts:
                continue
            rel = item.relative_to(folder)
            name = _RENAMES.get(rel.name, rel.name)
            destination = target / rel.parent / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item, destination)


def init_repository(target: Path, branch: str = "main") -> str:
    """Create ``target`` with the demo manifests, commit them; return the commit id."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(
            f"{target} already exists and is not empty", "pass a new folder name, for example: orlojd init my-agents"
        )
    target.mkdir(parents=True, exist_ok=True)
    _copy_templates(target)
    write_schemas(target / "schemas")
    run_git(target, "init", "--quiet", "--initial-branch", branch)
    run_git(target, "add", "--all")
    run_git(target, *identity_args(target, "orlojd init"), "commit", "--quiet", "--no-gpg-sign", "-m", COMMIT_MESSAGE)
    return run_git(target, "rev-parse", "HEAD").decode().strip()
