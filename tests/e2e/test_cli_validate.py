"""The real ``orlojd`` command in a subprocess: validate, init, schema, --help, --version."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
from manifests import OFFLINE_ENDPOINT

pytestmark = pytest.mark.e2e

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "orloj"
ERROR_LINE = re.compile(
    r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+): (?P<kind>[A-Za-z]+)/(?P<name>[^:\s]+): "
    r"(?P<field>[A-Za-z][\w.\[\]]*): (?P<message>\S.*)$"
)
MODELINE = re.compile(r"^# yaml-language-server: \$schema=(?P<target>\S+)$")


class Result(Protocol):
    code: int
    stdout: str
    stderr: str


Cli = Callable[..., Result]

MODEL = OFFLINE_ENDPOINT

AGENT = """\
apiVersion: orloj.dev/v1
kind: Agent
metadata:
  name: checker
spec:
  modelRef: offline
  governance:
    maxTokensPerMinute: 8000
"""


def git(path: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def folder(base: Path, files: dict[str, str | bytes]) -> Path:
    for rel, text in files.items():
        target = base / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text)
    return base


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.stdout + result.stderr
    assert "internal error" not in result.stderr


class GitRepo(Protocol):
    path: Path

    def write(self, rel: str, text: str | bytes) -> Path: ...

    def commit(self, message: str = "change") -> str: ...


# -- validate ---------------------------------------------------------------------------------


def test_valid_folder_exits_0(cli: Cli, tmp_path: Path) -> None:
    root = folder(tmp_path / "m", {"models/offline.yaml": MODEL, "agents/checker.yaml": AGENT})
    result = cli("validate", str(root))
    assert result.code == 0, result.stdout + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "valid: 2 objects in 2 files, 0 errors, 0 warnings"
    no_traceback(result)


def test_invalid_folder_exits_1_with_one_located_line_per_error(cli: Cli, tmp_path: Path) -> None:
    root = folder(
        tmp_path / "m",
        {
            "models/offline.yaml": MODEL.replace("defaultModel", "defualtModel"),
            "agents/checker.yaml": AGENT.replace("maxTokensPerMinute: 8000", "maxTokensPerMinute: -1"),
        },
    )
    result = cli("validate", str(root))
    assert result.code == 1
    no_traceback(result)
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("invalid: ") and "3 errors" in lines[-1]
    parsed = [ERROR_LINE.match(line) for line in lines[:-1]]
    assert all(parsed), lines
    found = {
        (Path(m["file"]).name, int(m["line"]), int(m["col"]), m["kind"], m["name"], m["field"]) for m in parsed if m
    }
    assert found == {
        ("checker.yaml", 8, 5, "Agent", "checker", "spec.governance.maxTokensPerMinute"),
        ("offline.yaml", 5, 1, "ModelEndpoint", "offline", "spec.defaultModel"),  # missing: at its parent
        ("offline.yaml", 7, 3, "ModelEndpoint", "offline", "spec.defualtModel"),
    }
    assert any("did you mean 'defaultModel'?" in line for line in lines)
    assert all(line.startswith(str(root)) for line in lines[:-1])


def test_json_format(cli: Cli, tmp_path: Path) -> None:
    root = folder(
        tmp_path / "m",
        {
            "models/offline.yaml": MODEL,
            "agents/checker.yaml": AGENT + "  memory:\n    allow: [read]\n",
            "bad.yaml": "kind: Tool\nmetadata: {name: t}\nspec: {type: nope}\n",
        },
    )
    result = cli("validate", str(root), "--format", "json")
    assert result.code == 1
    report: dict[str, Any] = json.loads(result.stdout)
    assert set(report) >= {"valid", "revision", "files", "objects", "errors", "warnings"}
    assert (report["valid"], report["revision"], report["files"], report["objects"]) == (False, None, 3, 2)
    [error] = report["errors"]
    assert error["file"].endswith("bad.yaml")
    assert (error["line"], error["kind"], error["name"], error["field"], error["severity"]) == (
        3,
        "Tool",
        "t",
        "spec.type",
        "error",
    )
    [warning] = report["warnings"]
    assert (warning["field"], warning["severity"]) == ("spec.memory", "warning")


def test_rev_head_reads_the_commit(cli: Cli, repo: GitRepo) -> None:
    repo.write("models/offline.yaml", MODEL)
    repo.write("agents/checker.yaml", AGENT)
    head = repo.commit("valid")
    repo.write("agents/checker.yaml", AGENT.replace("modelRef", "modelRf"))
    repo.write("agents/broken.yaml", b"\x00")
    assert cli("validate", str(repo.path)).code == 1
    result = cli("validate", str(repo.path), "--rev", "HEAD")
    assert result.code == 0, result.stdout
    assert result.stdout.strip().endswith(f"(revision {head[:12]})")
    report = json.loads(cli("validate", str(repo.path), "--rev", "HEAD", "--format", "json").stdout)
    assert (report["valid"], report["revision"], report["objects"]) == (True, head, 2)


def test_unknown_revision_exits_1_with_an_error(cli: Cli, repo: GitRepo) -> None:
    repo.write("m.yaml", MODEL)
    repo.commit("one")
    result = cli("validate", str(repo.path), "--rev", "nope")
    assert result.code == 1
    assert result.stderr.startswith("error: revision 'nope' not found")
    no_traceback(result)


def test_conformance_corpus_needs_no_resolve(cli: Cli, conformance_dir: Path) -> None:
    unresolved = cli("validate", "--no-resolve", str(conformance_dir))
    assert unresolved.code == 0, unresolved.stdout[-2000:]
    assert re.search(r"^valid: \d+ objects in 206 files, 0 errors, \d+ warnings$", unresolved.stdout, re.M)
    resolved = cli("validate", str(conformance_dir))
    assert resolved.code == 1
    assert "is declared twice" in resolved.stdout and "does not exist" in resolved.stdout
    no_traceback(resolved)


BROKEN: dict[str, str | bytes] = {
    "binary.yaml": b"\x89PNG\r\n\x1a\n\x00\x00",
    "latin1.yaml": b"kind: Agent\nmetadata: {name: caf\xe9}\n",
    "tabs.yaml": "kind: Agent\nspec:\n\tmodel: x\n",
    "dup.yaml": "kind: Agent\nkind: Tool\n",
    "bomb.yaml": "a: &a [x,x,x,x,x,x,x,x,x]\n"
    + "".join(f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
    "loop.yaml": "a: &a [*a]\n",
    "unclosed.yaml": "kind: Agent\nspec: {model: [x\n",
    "list.yaml": "- 1\n- 2\n",
    "wrong.yaml": "kind: Task\nmetadata: {name: t}\nspec: {agent: [a], priority: whenever}\n",
    "huge.yaml": b"#" * (4 * 1024 * 1024 + 1),
}


def test_broken_files_never_give_a_traceback(cli: Cli, tmp_path: Path) -> None:
    root = folder(tmp_path / "m", {**BROKEN, "models/offline.yaml": MODEL})
    for args in (["validate", str(root)], ["validate", str(root), "--format", "json"]):
        result = cli(*args)
        assert result.code == 1
        no_traceback(result)
        for name in BROKEN:
            assert f"{root}/{name}:" in result.stdout or f'"{root}/{name}"' in result.stdout, name


def test_infinite_duration_is_reported_as_a_located_error(cli: Cli, tmp_path: Path) -> None:
    root = folder(
        tmp_path / "m", {"models/offline.yaml": MODEL, "agents/checker.yaml": AGENT + "  retry: {backoff: .inf}\n"}
    )
    result = cli("validate", str(root))
    assert result.code == 1
    no_traceback(result)
    assert f"{root}/agents/checker.yaml:9:" in result.stdout


def test_nonexistent_path_exits_1_with_error(cli: Cli, tmp_path: Path) -> None:
    for extra in ([], ["--rev", "HEAD"]):
        result = cli("validate", str(tmp_path / "nowhere"), *extra)
        assert result.code == 1
        assert result.stderr.startswith("error: ") and "does not exist" in result.stderr
        no_traceback(result)


# -- init -------------------------------------------------------------------------------------


def test_init_creates_a_committed_repository_that_validates(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "agents-repo"
    result = cli("init", str(target))
    assert result.code == 0, result.stderr
    no_traceback(result)
    assert (target / ".git").is_dir()
    assert git(target, "rev-list", "--count", "HEAD") == "1"
    assert git(target, "status", "--porcelain") == ""
    assert git(target, "branch", "--show-current") == "main"
    assert (target / "orlojd.yaml").is_file()
    assert ".orlojd/" in (target / ".gitignore").read_text().splitlines()
    assert json.loads((target / "schemas" / "agent.json").read_text())["title"] == "Agent"
    committed = set(git(target, "ls-files").splitlines())
    assert {"orlojd.yaml", ".gitignore", "schemas/agent.json"} <= committed
    for args in ([], ["--rev", "HEAD"]):
        checked = cli("validate", str(target), *args)
        assert checked.code == 0, checked.stdout
        assert re.search(r"^valid: [1-9]\d* objects .* 0 errors", checked.stdout, re.M)


def test_init_refuses_a_non_empty_directory(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "keep.txt").write_text("mine\n")
    result = cli("init", str(target))
    assert result.code == 1
    assert result.stderr.startswith("error: ") and "not empty" in result.stderr
    no_traceback(result)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]


def test_init_into_an_existing_empty_directory_works(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    assert cli("init", str(target)).code == 0
    assert cli("validate", str(target)).code == 0


def init_yaml_files(cli: Cli, tmp_path: Path) -> tuple[Path, list[Path]]:
    target = tmp_path / "demo"
    assert cli("init", str(target)).code == 0
    files = sorted(p for p in target.rglob("*") if p.suffix in (".yaml", ".yml") and ".git" not in p.parts)
    return target, files


def test_init_manifests_start_with_a_schema_modeline_that_resolves(cli: Cli, tmp_path: Path) -> None:
    import yaml
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    target, files = init_yaml_files(cli, tmp_path)
    manifests = [p for p in files if p.name != "orlojd.yaml"]
    assert len(manifests) >= 5
    schemas = {p.resolve(): json.loads(p.read_text()) for p in (target / "schemas").glob("*.json")}
    registry: Registry[Any] = Registry().with_resources((p.name, Resource.from_contents(s)) for p, s in schemas.items())
    for path in manifests:
        first = path.read_text().splitlines()[0]
        match = MODELINE.match(first)
        assert match, f"{path.relative_to(target)} starts with {first!r}"
        schema_path = (path.parent / match["target"]).resolve()
        assert schema_path.is_file(), f"{path.relative_to(target)} points at missing {match['target']}"
        validator = Draft202012Validator(schemas[schema_path], registry=registry)
        for document in yaml.safe_load_all(path.read_text()):
            problems = [e.message for e in validator.iter_errors(document)]
            assert problems == [], f"{path.relative_to(target)}: {problems}"
            if schema_path.name != "manifest.json":
                assert schema_path.name == f"{document['kind'].lower()}.json"


def test_init_settings_file_starts_with_a_schema_modeline(cli: Cli, tmp_path: Path) -> None:
    target, _ = init_yaml_files(cli, tmp_path)
    first = (target / "orlojd.yaml").read_text().splitlines()[0]
    match = MODELINE.match(first)
    assert match and (target / match["target"]).is_file()


# -- schema, help, version --------------------------------------------------------------------

KINDS = [
    "Agent",
    "AgentPolicy",
    "AgentRole",
    "AgentSystem",
    "McpServer",
    "Memory",
    "ModelEndpoint",
    "Policy",
    "Secret",
    "Task",
    "TaskSchedule",
    "TaskWebhook",
    "Tool",
    "ToolApproval",
    "ToolPermission",
    "Worker",
]


def test_schema_prints_one_schema_per_kind(cli: Cli) -> None:
    result = cli("schema")
    assert result.code == 0
    schemas = json.loads(result.stdout)
    assert sorted(schemas) == KINDS
    for kind, schema in schemas.items():
        assert schema["title"] == kind
        assert schema["properties"]["kind"] == {"const": kind, "type": "string"}
        assert {"kind", "metadata", "spec"} <= set(schema["properties"])


def test_schema_out_writes_one_file_per_kind(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    result = cli("schema", "--out", str(out))
    assert result.code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted([f"{k.lower()}.json" for k in KINDS] + ["manifest.json", "settings.json"])
    assert sorted(Path(line).name for line in result.stdout.splitlines()) == written
    assert json.loads((out / "agent.json").read_text())["title"] == "Agent"
    assert json.loads((out / "taskschedule.json").read_text())["title"] == "TaskSchedule"


def test_help_exits_0_and_lists_the_commands(cli: Cli) -> None:
    result = cli("--help")
    assert result.code == 0
    for command in ("validate", "schema", "init"):
        assert re.search(rf"^\s+{command}\b", result.stdout, re.M), command


def test_version_prints_the_package_version(cli: Cli) -> None:
    from importlib.metadata import version

    import orlojd

    result = cli("--version")
    assert result.code == 0
    assert result.stdout.strip() == f"orlojd {orlojd.__version__}"
    assert orlojd.__version__ == version("orlojd")


def test_task_bad_input_is_located(cli: Cli, tmp_path: Path) -> None:
    """Issue 6's bad input: a cron that never fires, an oversized input, a malformed worker label."""
    (tmp_path / "m.yaml").write_text(MODEL)
    (tmp_path / "a.yaml").write_text(AGENT)
    (tmp_path / "never.yaml").write_text(
        "apiVersion: orloj.dev/v1\nkind: TaskSchedule\nmetadata:\n  name: never\n"
        'spec:\n  taskRef: big\n  schedule: "0 0 30 2 *"\n'
    )
    big = "x" * (300 * 1024)
    (tmp_path / "big.yaml").write_text(
        "apiVersion: orloj.dev/v1\nkind: Task\nmetadata:\n  name: big\n"
        f"spec:\n  agent: checker\n  mode: template\n  input:\n    blob: {big}\n"
        "  requirements:\n    labels:\n      'bad key': x\n"
    )
    done = cli("validate", str(tmp_path))
    assert done.code == 1 and "Traceback" not in done.stderr
    lines = done.stdout.splitlines() + done.stderr.splitlines()
    assert any("never.yaml:7:3" in line and "spec.schedule" in line and "never fire" in line for line in lines), lines
    assert any("big.yaml:" in line and "spec.input" in line and "the limit is 256 KiB" in line for line in lines)
    assert any("big.yaml:" in line and "label key 'bad key'" in line for line in lines), lines
