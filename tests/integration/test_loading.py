"""Loading desired state from real git repositories: working tree and ``--rev`` agree.

Every test builds its own repository in tmp_path with the ``repo`` fixture and reads
it through ``orlojd.sources`` (the same functions ``orlojd validate`` uses).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import pytest
from manifests import OFFLINE_ENDPOINT

from orlojd.core.desired import Desired
from orlojd.core.documents import MAX_FILE_BYTES
from orlojd.core.keys import ResourceKey
from orlojd.errors import GitError, OrlojError
from orlojd.sources import load, load_revision, load_worktree


class GitRepo(Protocol):
    """The ``repo`` fixture (tests/conftest.py): a real repository in tmp_path."""

    path: Path

    def write(self, rel: str, text: str | bytes) -> Path: ...

    def remove(self, rel: str) -> None: ...

    def commit(self, message: str = "change") -> str: ...

    def git(self, *args: str) -> str: ...


MODEL = OFFLINE_ENDPOINT

TOOL = """\
apiVersion: orloj.dev/v1
kind: Tool
metadata:
  name: scan-documents
spec:
  type: builtin
  requires:
    - read: compliance_docs
"""

AGENT = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: checker
spec:
  modelRef: offline
  prompt: Check the documents.
  tools:
    - name: scan-documents
      permissions:
        - read: compliance_docs
  memory:
    allow: [read]
"""

TASKS = """\
apiVersion: orloj.dev/v1
kind: Task
metadata:
  name: nightly
spec:
  mode: template
  agent: checker
---
apiVersion: orloj.dev/v1
kind: TaskSchedule
metadata:
  name: nightly
spec:
  taskRef: nightly
  schedule: "0 2 * * *"
"""

DEMO = {
    "models/offline.yaml": MODEL,
    "tools/scan.yaml": TOOL,
    "agents/checker.yaml": AGENT,
    "tasks/nightly.yml": TASKS,
}
DEMO_KEYS = {
    ("ModelEndpoint", "offline"),
    ("Tool", "scan-documents"),
    ("Agent", "checker"),
    ("Task", "nightly"),
    ("TaskSchedule", "nightly"),
}


def digests(desired: Desired) -> dict[ResourceKey, str]:
    return {key: loaded.digest for key, loaded in desired.objects.items()}


def names(desired: Desired) -> set[tuple[str, str]]:
    return {(key.kind, key.name) for key in desired.objects}


def formatted(desired: Desired) -> list[str]:
    return [d.format() for d in desired.diagnostics]


def write_all(repo: GitRepo, files: dict[str, str | bytes], under: str = "") -> None:
    for rel, text in files.items():
        repo.write(under + rel, text)


def test_worktree_and_revision_give_the_same_digests(repo: GitRepo) -> None:
    write_all(repo, DEMO)
    head = repo.commit("demo")
    tree, tree_snapshot = load(repo.path)
    committed, rev_snapshot = load(repo.path, "HEAD")
    assert names(tree) == DEMO_KEYS
    assert digests(tree) == digests(committed)
    assert tree.files == committed.files == 4
    # the memory field yields the same warning on both roads, at the same place
    assert formatted(tree) == formatted(committed)
    assert len(tree.warnings) == 1 and tree.ok
    assert (tree_snapshot.commit, rev_snapshot.commit) == (None, head)
    assert {loaded.file for loaded in committed.objects.values()} == {f"{repo.path}/{p}" for p in DEMO}


def test_worktree_and_revision_agree_for_a_subfolder(repo: GitRepo) -> None:
    write_all(repo, DEMO, under="deploy/prod/")
    repo.write("other/unrelated.yaml", "not: a manifest\n")
    repo.commit("demo in a subfolder")
    folder = repo.path / "deploy" / "prod"
    tree, _ = load_worktree(folder)
    committed, _ = load_revision(folder, "HEAD")
    assert names(tree) == DEMO_KEYS and tree.ok
    assert digests(tree) == digests(committed)
    assert formatted(tree) == formatted(committed)


def test_rev_reads_the_commit_not_uncommitted_edits(repo: GitRepo) -> None:
    write_all(repo, DEMO)
    repo.commit("demo")
    before = digests(load(repo.path, "HEAD")[0])
    repo.write("agents/checker.yaml", AGENT.replace("Check the documents.", "Check everything."))
    repo.write("agents/new.yaml", "kind: Agent\nmetadata: {name: new}\nspec: {modelRf: offline}\n")
    repo.remove("tools/scan.yaml")
    repo.git("add", "agents/new.yaml")  # staged is not committed either
    committed, snapshot = load(repo.path, "HEAD")
    assert digests(committed) == before and committed.ok
    assert snapshot.commit == repo.git("rev-parse", "HEAD")
    tree, _ = load(repo.path)
    agent = ResourceKey("Agent", "default", "checker")
    assert digests(tree)[agent] != before[agent]
    assert ("Tool", "scan-documents") not in names(tree)
    assert {e.file for e in tree.errors} >= {f"{repo.path}/agents/new.yaml"}


def test_rev_reads_older_commits(repo: GitRepo) -> None:
    write_all(repo, DEMO)
    first = repo.commit("first")
    first_digests = digests(load(repo.path, "HEAD")[0])
    repo.write("agents/checker.yaml", AGENT.replace("Check the documents.", "Check twice."))
    repo.remove("tasks/nightly.yml")
    repo.commit("second")
    assert digests(load(repo.path, first)[0]) == first_digests
    assert digests(load(repo.path, "HEAD~1")[0]) == first_digests
    assert digests(load(repo.path, "main~1")[0]) == first_digests
    second = load(repo.path, "HEAD")[0]
    assert names(second) == DEMO_KEYS - {("Task", "nightly"), ("TaskSchedule", "nightly")}


IGNORED: dict[str, str | bytes] = {
    ".orlojignore": "# not manifests\ndrafts/\n*.wip.yaml\n!keep.wip.yaml\n/top-only.yaml\n",
    "drafts/broken.yaml": "kind: [unclosed\n",
    "teams/a/drafts/also.yaml": "kind: Agent\n",
    "half.wip.yaml": "\x00binary",
    "keep.wip.yaml": MODEL.replace("name: offline", "name: kept"),
    "top-only.yaml": "kind: Nonsense\n",
    "sub/top-only.yaml": MODEL.replace("name: offline", "name: nested"),
}


@pytest.mark.parametrize("rev", [None, "HEAD"], ids=["worktree", "revision"])
def test_orlojignore_excludes_files(repo: GitRepo, rev: str | None) -> None:
    write_all(repo, {"models/offline.yaml": MODEL, **IGNORED})
    repo.commit("with ignores")
    desired, _ = load(repo.path, rev)
    assert desired.errors == []
    assert names(desired) == {("ModelEndpoint", "offline"), ("ModelEndpoint", "kept"), ("ModelEndpoint", "nested")}
    assert desired.files == 3


def test_without_orlojignore_the_same_files_are_errors(repo: GitRepo) -> None:
    files = {k: v for k, v in IGNORED.items() if k != ".orlojignore"}
    write_all(repo, files)
    repo.commit("no ignores")
    for rev in (None, "HEAD"):
        desired, _ = load(repo.path, rev)
        assert {Path(e.file).name for e in desired.errors} == {
            "broken.yaml",
            "also.yaml",
            "half.wip.yaml",
            "top-only.yaml",
        }


SKIPPED: dict[str, str | bytes] = {
    ".github/workflows/ci.yaml": "on: push\njobs: {}\n",
    ".orlojd/cache.yaml": "kind: Broken\n",
    "teams/.hidden/x.yaml": "kind: Broken\n",
    ".hidden.yaml": "kind: Broken\n",
    "orlojd.yaml": "stateDir: .orlojd\nrepo:\n  branch: main\n",
    "README.md": "# not yaml\n",
    "notes.txt": "kind: Broken\n",
    "schemas/agent.json": "{}\n",
}


@pytest.mark.parametrize("rev", [None, "HEAD"], ids=["worktree", "revision"])
def test_hidden_paths_root_config_and_non_yaml_are_skipped(repo: GitRepo, rev: str | None) -> None:
    write_all(repo, {**DEMO, **SKIPPED})
    repo.commit("with extras")
    desired, _ = load(repo.path, rev)
    assert desired.errors == []
    assert names(desired) == DEMO_KEYS
    assert desired.files == len(DEMO)


def test_duplicate_identity_names_both_places(repo: GitRepo) -> None:
    repo.write("a/models.yaml", TOOL + "---\n" + MODEL)  # the endpoint is document 2, lines 10-16
    repo.write("b/copy.yaml", "# a copy\n" + MODEL.replace("demo", "other"))
    repo.commit("duplicate")
    for rev in (None, "HEAD"):
        desired, _ = load(repo.path, rev)
        [error] = desired.errors
        assert error.file == f"{repo.path}/b/copy.yaml"
        assert (error.line, error.field) == (5, "metadata.name")
        assert "ModelEndpoint/offline is declared twice" in error.message
        match = re.search(re.escape(f"{repo.path}/a/models.yaml") + r":(\d+)", error.message)
        assert match, error.message
        assert 10 <= int(match.group(1)) <= 16
        assert error.format().startswith(f"{repo.path}/b/copy.yaml:5:")


def test_same_name_in_another_kind_or_namespace_is_not_a_duplicate(repo: GitRepo) -> None:
    repo.write("m.yaml", MODEL)
    repo.write("t.yaml", TOOL.replace("scan-documents", "offline"))
    repo.write("n.yaml", MODEL.replace("  name: offline\n", "  name: offline\n  namespace: team-b\n"))
    repo.commit("same names")
    desired, _ = load(repo.path, "HEAD")
    assert desired.ok and len(desired.objects) == 3


def test_dangling_reference_is_an_error_unless_resolve_is_off(repo: GitRepo) -> None:
    write_all(repo, {k: v for k, v in DEMO.items() if k != "models/offline.yaml"})
    repo.commit("no model")
    for rev in (None, "HEAD"):
        desired, _ = load(repo.path, rev)
        [error] = desired.errors
        assert (error.file, error.line, error.column) == (f"{repo.path}/agents/checker.yaml", 6, 3)
        assert (error.kind, error.name, error.field) == ("Agent", "checker", "spec.modelRef")
        assert "ModelEndpoint 'offline' does not exist" in error.message
        unresolved, _ = load(repo.path, rev, resolve=False)
        assert unresolved.ok and names(unresolved) == DEMO_KEYS - {("ModelEndpoint", "offline")}


def test_reference_to_a_non_template_task_is_an_error(repo: GitRepo) -> None:
    write_all(repo, {**DEMO, "tasks/nightly.yml": TASKS.replace("  mode: template\n", "")})
    repo.commit("run-mode task")
    desired, _ = load(repo.path, "HEAD")
    [error] = desired.errors
    assert error.field == "spec.taskRef" and "mode: template" in error.message


def test_moving_a_file_changes_no_digest(repo: GitRepo) -> None:
    write_all(repo, DEMO)
    before_commit = repo.commit("demo")
    (repo.path / "teams" / "risk").mkdir(parents=True)
    repo.git("mv", "agents/checker.yaml", "teams/risk/agent-checker.yaml")
    repo.git("mv", "tasks/nightly.yml", "nightly.yaml")
    after_commit = repo.commit("reorganise")
    before = load(repo.path, before_commit)[0]
    after = load(repo.path, after_commit)[0]
    assert digests(before) == digests(after) == digests(load(repo.path)[0])
    moved = after.objects[ResourceKey("Agent", "default", "checker")]
    assert moved.file == f"{repo.path}/teams/risk/agent-checker.yaml"


def test_too_large_file_is_reported_on_both_roads(repo: GitRepo) -> None:
    write_all(repo, DEMO)
    repo.write("models/huge.yaml", b"#" * (MAX_FILE_BYTES + 1))
    repo.commit("huge")
    tree, _ = load(repo.path)
    committed, _ = load(repo.path, "HEAD")
    assert formatted(tree) == formatted(committed)
    assert [Path(e.file).name for e in committed.errors] == ["huge.yaml"]
    assert names(committed) == DEMO_KEYS


def test_unknown_revision_raises_git_error(repo: GitRepo) -> None:
    write_all(repo, DEMO)
    repo.commit("demo")
    with pytest.raises(GitError) as caught:
        load(repo.path, "no-such-branch")
    assert "revision 'no-such-branch' not found" in caught.value.message
    assert str(repo.path) in caught.value.message
    assert caught.value.hint


def test_revision_that_looks_like_an_option_is_not_passed_to_git_as_one(repo: GitRepo) -> None:
    write_all(repo, DEMO)
    repo.commit("demo")
    with pytest.raises(GitError, match="not found"):
        load(repo.path, "--output=/dev/null")


def test_revision_outside_a_git_repository_raises_git_error(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MODEL)
    with pytest.raises(GitError, match="not inside a git repository"):
        load(tmp_path, "HEAD")
    assert load(tmp_path)[0].ok  # the working tree needs no git


def test_missing_path_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OrlojError, match="does not exist"):
        load(tmp_path / "missing")
    with pytest.raises(GitError, match="does not exist"):
        load(tmp_path / "missing", "HEAD")


def test_single_file_reads_the_same_on_both_roads(repo: GitRepo) -> None:
    write_all(repo, {"m.yaml": MODEL, "broken.yaml": "kind: Tool\nmetadata: {name: t}\nspec: {type: nope}\n"})
    repo.commit("two files")
    tree, _ = load(repo.path / "m.yaml")
    committed, _ = load(repo.path / "m.yaml", "HEAD")
    assert tree.ok and tree.files == 1
    assert (committed.files, formatted(committed)) == (tree.files, formatted(tree))


def test_symlinked_manifest_reads_the_same_on_both_roads(repo: GitRepo) -> None:
    write_all(repo, {"shared/model.yaml": MODEL})
    (repo.path / "team").mkdir()
    (repo.path / "team" / "model.yaml").symlink_to("../shared/model.yaml")
    repo.commit("symlink")
    assert repo.git("status", "--porcelain") == ""
    tree, _ = load(repo.path)
    committed, _ = load(repo.path, "HEAD")
    assert formatted(committed) == formatted(tree)
