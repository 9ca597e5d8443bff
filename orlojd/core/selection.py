"""Which files of a tree are manifests: YAML files, minus hidden paths, orlojd.yaml and .orlojignore.

Pure: takes paths and the text of ``.orlojignore`` (gitignore syntax, via pathspec),
so the working tree and a git commit are filtered by exactly the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable

import pathspec

IGNORE_FILE = ".orlojignore"
CONFIG_FILES = frozenset({"orlojd.yaml", "orlojd.yml"})
MANIFEST_SUFFIXES = (".yaml", ".yml")


def is_manifest_path(path: str) -> bool:
    """A YAML file not inside a hidden folder and not the orlojd.yaml config at the root."""
    if path in CONFIG_FILES or not path.endswith(MANIFEST_SUFFIXES):
        return False
    return not any(part.startswith(".") for part in path.split("/"))


def select(paths: Iterable[str], ignore_text: str | None) -> list[str]:
    """Manifest paths (relative, '/'-separated) in sorted order, after .orlojignore."""
    spec = pathspec.GitIgnoreSpec.from_lines(ignore_text.splitlines()) if ignore_text else None
    chosen = [p for p in paths if is_manifest_path(p)]
    if spec is not None:
        chosen = [p for p in chosen if not spec.match_file(p)]
    return sorted(chosen)
