"""Benchmark: load and validate 10,000 manifests from one git commit, against the floor.

The workload is generated deterministically: 100 folders (one namespace each) of 100
canonical-dialect manifests (Tools, Agents, Tasks, a ModelEndpoint, a Secret, a Policy,
an AgentSystem and a TaskSchedule), about 30 lines each, committed into a real git
repository (built with ``git fast-import`` and packed with ``git gc``).

Measured in the same run, each repeated and reported as the median:

* floor: one ``git ls-tree -r -z`` + one streaming ``git cat-file --batch`` + ``yaml.load_all``
  with ``CSafeLoader`` on every blob, nothing more;
* orlojd: ``orlojd.sources.load_revision(repo, "HEAD", resolve=True)``, which must return
  every object and no error;
* start-up: ``orlojd --help`` against ``python -c "import pydantic, yaml, git"``.

Human-readable lines go first; the last line is one JSON object (see bench/README.md).

    .venv/bin/python bench/load.py            # full: more repeats
    .venv/bin/python bench/load.py --quick    # under 60 s on 2 cores, same 10k size
    .venv/bin/python bench/load.py --profile  # adds a cProfile of one orlojd load
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import yaml

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"
METRIC = "load_validate_10k"
TARGET_RATIO = 3.0
HELP_TARGET_SECONDS = 0.3
GIT_ENV = {
    "GIT_AUTHOR_NAME": "orlojd bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "orlojd bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}

# ---------------------------------------------------------------------------
# Workload: deterministic manifests
# ---------------------------------------------------------------------------

TOOLS_PER_FOLDER = 34
AGENTS_PER_FOLDER = 30
TASKS_PER_FOLDER = 30
FIXED_PER_FOLDER = 6  # ModelEndpoint, Secret, Policy, AgentSystem, template Task, TaskSchedule
PER_FOLDER = FIXED_PER_FOLDER + TOOLS_PER_FOLDER + AGENTS_PER_FOLDER + TASKS_PER_FOLDER
ACCESS = ("read", "read", "write", "read", "delete")
RISK = ("low", "medium", "low", "high")


def _head(kind: str, name: str, ns: str, extra_labels: str = "") -> str:
    return (
        f"# yaml-language-server: $schema=../schemas/{kind.lower()}.json\n"
        "apiVersion: orloj.dev/v1\n"
        f"kind: {kind}\n"
        "metadata:\n"
        f"  name: {name}\n"
        f"  namespace: {ns}\n"
        "  labels:\n"
        f"    team: {ns}\n"
        f"{extra_labels}"
    )


def _resource(team: int, tool: int) -> tuple[str, str]:
    access = ACCESS[tool % len(ACCESS)]
    return access, f"dataset_{team:03d}_{tool:02d}"


def _tool(team: int, ns: str, i: int) -> str:
    access, resource = _resource(team, i)
    risk = RISK[i % len(RISK)]
    return _head("Tool", f"tool-{i:02d}", ns, f"    risk: {risk}\n") + (
        "spec:\n"
        "  type: http\n"
        f"  endpoint: https://tools.internal/{ns}/tool-{i:02d}\n"
        f"  description: {access.capitalize()} records of dataset {i} for team {team}.\n"
        f"  riskLevel: {risk}\n"
        "  requires:\n"
        f"    - {access}: {resource}\n"
        f"  operationClasses: [{access}]\n"
        "  inputSchema:\n"
        "    type: object\n"
        "    properties:\n"
        "      query:\n"
        "        type: string\n"
        "      limit:\n"
        "        type: integer\n"
        "    required: [query]\n"
        "  auth:\n"
        "    profile: bearer\n"
        "    secretRef: tools-token\n"
        "  runtime:\n"
        f"    timeout: {10 + i % 5 * 5}s\n"
        "    retry:\n"
        "      maxAttempts: 2\n"
        "      backoff: 1s\n"
        "      maxBackoff: 10s\n"
        "      jitter: full\n"
    )


def _agent(team: int, ns: str, i: int) -> str:
    first, second = (i * 7) % TOOLS_PER_FOLDER, (i * 7 + 3) % TOOLS_PER_FOLDER
    a1, r1 = _resource(team, first)
    a2, r2 = _resource(team, second)
    approval = f"      - {a2}: {r2}\n" if a2 != "read" else f"      - write: reports_{team:03d}\n"
    return _head("Agent", f"agent-{i:02d}", ns, f"    tier: {'gold' if i % 3 == 0 else 'standard'}\n") + (
        "spec:\n"
        "  modelRef: model\n"
        "  prompt: |\n"
        f"    You are analyst {i} of {ns}. Read the datasets you are granted,\n"
        "    summarise what changed since the last run and file a short report.\n"
        "  tools:\n"
        f"    - name: tool-{first:02d}\n"
        "      permissions:\n"
        f"        - {a1}: {r1}\n"
        f"    - name: tool-{second:02d}\n"
        "      permissions:\n"
        f"        - {a2}: {r2}\n"
        "  governance:\n"
        f"    maxTokensPerMinute: {4000 + i * 100}\n"
        "    maxTokensPerRun: 40000\n"
        "    requireApproval:\n"
        f"{approval}"
        "    auditLog: true\n"
        "  retry:\n"
        "    maxAttempts: 3\n"
        "    backoff:\n"
        "      initial: 2s\n"
        "      max: 1m\n"
        "    jitter: full\n"
        "  limits:\n"
        f"    maxSteps: {8 + i % 8}\n"
        "    timeout: 5m\n"
    )


def _task(team: int, ns: str, i: int) -> str:
    target = "  system: pipeline\n" if i % 10 == 0 else f"  agent: agent-{i % AGENTS_PER_FOLDER:02d}\n"
    return _head("Task", f"task-{i:02d}", ns, f"    batch: b{i % 4}\n") + (
        "spec:\n"
        f"{target}"
        "  input:\n"
        f"    folder: reports/{2026 - i % 3}-q{1 + i % 4}\n"
        f"    dataset: dataset_{team:03d}_{i % TOOLS_PER_FOLDER:02d}\n"
        f"    limit: {100 + i}\n"
        "    format: markdown\n"
        "    notify:\n"
        f"      - {ns}-leads@example.invalid\n"
        "  priority: 3\n"
        "  maxTurns: 6\n"
        "  deadline: 30m\n"
        "  retry:\n"
        "    maxAttempts: 2\n"
        "    backoff:\n"
        "      initial: 5s\n"
        "      max: 2m\n"
        "      multiplier: 3\n"
        "    jitter: equal\n"
        "  requirements:\n"
        "    region: eu-central\n"
        "    gpu: false\n"
    )


def _fixed(team: int, ns: str) -> list[tuple[str, str]]:
    model = _head("ModelEndpoint", "model", ns) + (
        "spec:\n  provider: scripted\n  defaultModel: bench-script\n  options:\n    temperature: '0'\n"
    )
    secret = _head("Secret", "tools-token", ns) + "spec:\n  env: TOOLS_TOKEN\n"
    policy = _head("Policy", "limits", ns) + (
        "spec:\n"
        "  selector:\n"
        f"    namespaces: [{ns}]\n"
        "  deny:\n"
        f"    - admin: dataset_{team:03d}_*\n"
        "  requireApproval:\n"
        f"    - delete: dataset_{team:03d}_*\n"
        "  approval:\n"
        f"    approvers: [{ns}-leads]\n"
        "    required: 1\n"
        "    timeout: 4h\n"
        "  budgets:\n"
        "    maxTokensPerRun: 60000\n"
        "    maxCostPerDay: 25.0\n"
        "  onDeny: fail_run\n"
    )
    system = _head("AgentSystem", "pipeline", ns) + (
        "spec:\n"
        "  agents: [agent-00, agent-01, agent-02]\n"
        "  graph:\n"
        "    agent-00:\n"
        "      next: agent-01\n"
        "    agent-01:\n"
        "      next: agent-02\n"
    )
    template = _head("Task", "nightly", ns) + (
        "spec:\n  mode: template\n  agent: agent-00\n  input:\n    folder: inbox\n"
    )
    schedule = _head("TaskSchedule", "nightly", ns) + (
        "spec:\n"
        "  taskRef: nightly\n"
        f'  schedule: "{team % 60} 2 * * *"\n'
        "  timeZone: Europe/Prague\n"
        "  concurrencyPolicy: forbid\n"
    )
    return [
        ("models/model.yaml", model),
        ("secrets/tools-token.yaml", secret),
        ("policies/limits.yaml", policy),
        ("systems/pipeline.yaml", system),
        ("tasks/nightly.yaml", template),
        ("schedules/nightly.yaml", schedule),
    ]


def generate(folders: int) -> Iterator[tuple[str, bytes]]:
    """(path, content) of ``folders`` x 100 manifests, always the same bytes."""
    for team in range(folders):
        ns = f"team-{team:03d}"
        files = _fixed(team, ns)
        files += [(f"tools/tool-{i:02d}.yaml", _tool(team, ns, i)) for i in range(TOOLS_PER_FOLDER)]
        files += [(f"agents/agent-{i:02d}.yaml", _agent(team, ns, i)) for i in range(AGENTS_PER_FOLDER)]
        files += [(f"tasks/task-{i:02d}.yaml", _task(team, ns, i)) for i in range(TASKS_PER_FOLDER)]
        for rel, text in files:
            yield f"{ns}/{rel}", text.encode()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def provenance() -> dict[str, Any]:
    """Where and on what a figure was measured: machine, orlojd commit (and whether it was dirty), date."""
    return {
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "git": git(HERE, "--version").decode().split()[-1],
            "platform": platform.platform(),
        },
        "orlojd_commit": git(HERE.parent, "rev-parse", "--short", "HEAD").decode().strip(),
        "orlojd_dirty": bool(git(HERE.parent, "status", "--porcelain", "--", "orlojd").strip()),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **GIT_ENV},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def build_repo(repo: Path, folders: int) -> tuple[int, int]:
    """A repository whose HEAD commit holds the workload, packed; returns (files, bytes)."""
    git(repo, "init", "--quiet", "--initial-branch", "main")
    stream = io.BytesIO()
    files: list[str] = []
    total = 0
    for mark, (path, content) in enumerate(generate(folders), start=1):
        stream.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(content)))
        stream.write(content + b"\n")
        files.append(path)
        total += len(content)
    message = b"bench: generated manifests\n"
    stream.write(b"commit refs/heads/main\n")
    stream.write(b"author orlojd bench <bench@example.invalid> 1764000000 +0000\n")
    stream.write(b"committer orlojd bench <bench@example.invalid> 1764000000 +0000\n")
    stream.write(b"data %d\n%s\n" % (len(message), message))
    for mark, path in enumerate(files, start=1):
        stream.write(b"M 100644 :%d %s\n" % (mark, path.encode()))
    git(repo, "fast-import", "--quiet", stdin=stream.getvalue())
    git(repo, "gc", "--quiet")
    return len(files), total


# ---------------------------------------------------------------------------
# The floor and orlojd
# ---------------------------------------------------------------------------


def floor_load(repo: Path) -> int:
    """ls-tree + one streaming cat-file --batch + CSafeLoader; returns the number of documents."""
    listing = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "-z", "HEAD"], capture_output=True, check=True
    ).stdout
    oids: list[bytes] = []
    for record in listing.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        _mode, kind, oid = meta.split()
        if kind == b"blob" and path.endswith((b".yaml", b".yml")):
            oids.append(oid)
    proc = subprocess.Popen(
        ["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin: IO[bytes] = proc.stdin

    def feed() -> None:
        stdin.write(b"".join(oid + b"\n" for oid in oids))
        stdin.close()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    documents = 0
    stdout = proc.stdout
    for _ in oids:
        size = int(stdout.readline().split()[2])
        blob = stdout.read(size)
        stdout.read(1)
        for doc in yaml.load_all(blob, Loader=yaml.CSafeLoader):
            if doc is not None:
                documents += 1
    writer.join()
    stdout.close()
    proc.wait()
    return documents


def orlojd_load(repo: Path, expected: int) -> int:
    """orlojd's own path: load_revision at HEAD with references resolved; no error allowed."""
    from orlojd.sources import load_revision

    desired, _snapshot = load_revision(repo, "HEAD", resolve=True)
    errors = desired.errors
    assert not errors, f"{len(errors)} errors, first: {errors[0].format()}"
    assert len(desired.objects) == expected, f"{len(desired.objects)} objects, expected {expected}"
    return len(desired.objects)


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


def orlojd_stages(repo: Path) -> dict[str, float]:
    """One load split into orlojd's own stages (read git, parse+validate+digest, assemble)."""
    from orlojd.adapters import gitrepo
    from orlojd.core.desired import assemble, load_file
    from orlojd.core.documents import MAX_FILE_BYTES

    out: dict[str, float] = {}
    start = time.perf_counter()
    commit = gitrepo.resolve_commit(repo, "HEAD")
    entries = gitrepo.list_tree(repo, commit)
    contents = gitrepo.read_files(repo, commit, entries, MAX_FILE_BYTES)
    out["read_git"] = time.perf_counter() - start
    start = time.perf_counter()
    results = [load_file(rel, content, e.size) for e, (rel, content) in zip(entries, contents, strict=True)]
    out["load_file"] = time.perf_counter() - start
    start = time.perf_counter()
    assemble(results, resolve=True)
    out["assemble"] = time.perf_counter() - start
    return out


def command_seconds(argv: list[str], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        seconds.append(time.perf_counter() - start)
    return seconds


def orlojd_command() -> str:
    beside = Path(sys.executable).with_name("orlojd")
    found = str(beside) if beside.exists() else shutil.which("orlojd")
    if found is None:
        raise SystemExit("orlojd is not installed in this environment: run scripts/bootstrap.sh")
    return found


def profile_once(repo: Path, expected: int, top: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    orlojd_load(repo, expected)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    return text.getvalue()


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats; finishes in under 60 s")
    parser.add_argument("--repeats", type=int, default=None, help="override the number of repeats")
    parser.add_argument("--folders", type=int, default=100, help="folders of 100 manifests (default 100)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one orlojd load")
    parser.add_argument("--keep", action="store_true", help="keep the generated repository in bench/.work")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 7)
    help_repeats = 5 if args.quick else 10
    expected = args.folders * PER_FOLDER

    WORK.mkdir(exist_ok=True)
    repo = Path(tempfile.mkdtemp(prefix="load-", dir=WORK))
    try:
        start = time.perf_counter()
        files, size = build_repo(repo, args.folders)
        print(
            f"workload: {files:,} manifests in {args.folders} folders, {size / 1e6:.1f} MB, "
            f"{size / files:.0f} B/file; repo built in {time.perf_counter() - start:.1f} s ({repo})"
        )

        import orlojd.sources  # noqa: F401  (import cost is not part of the load)

        floor_docs = floor_load(repo)
        assert floor_docs == expected, f"floor read {floor_docs} documents, expected {expected}"
        floor_s: list[float] = []
        orlojd_s: list[float] = []
        for _ in range(repeats):  # interleaved, so that machine noise hits both alike
            floor_s += timed(lambda: floor_load(repo), 1)
            orlojd_s += timed(lambda: orlojd_load(repo, expected), 1)
        floor_median = statistics.median(floor_s)
        orlojd_median = statistics.median(orlojd_s)
        floor_rate = expected / floor_median
        rate = expected / orlojd_median
        ratio = floor_rate / rate
        print(
            f"floor  (ls-tree + cat-file --batch + CSafeLoader): median {fmt_ms(floor_median)} "
            f"= {floor_rate:,.0f} manifests/s  runs: {', '.join(fmt_ms(s) for s in floor_s)}"
        )
        print(
            f"orlojd (load_revision HEAD, resolve=True):         median {fmt_ms(orlojd_median)} "
            f"= {rate:,.0f} manifests/s  runs: {', '.join(fmt_ms(s) for s in orlojd_s)}"
        )
        verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
        print(f"ratio: orlojd is {ratio:.2f}x the floor; target <= {TARGET_RATIO:.1f}x: {verdict}")

        stages = orlojd_stages(repo)
        print("orlojd stages (one run): " + ", ".join(f"{k} {fmt_ms(v)}" for k, v in stages.items()))

        help_s = command_seconds([orlojd_command(), "--help"], help_repeats)
        help_floor_s = command_seconds([sys.executable, "-c", "import pydantic, yaml, git"], help_repeats)
        help_median = statistics.median(help_s)
        help_floor = statistics.median(help_floor_s)
        help_verdict = "meets" if help_median < HELP_TARGET_SECONDS else "MISSES"
        print(
            f"orlojd --help: median {fmt_ms(help_median)} (target < {fmt_ms(HELP_TARGET_SECONDS)}: "
            f"{help_verdict}); floor python -c 'import pydantic, yaml, git': {fmt_ms(help_floor)}"
        )

        if args.profile:
            print(profile_once(repo, expected))
    finally:
        if not args.keep:
            shutil.rmtree(repo, ignore_errors=True)

    result = {
        "metric": METRIC,
        "value": round(rate, 1),
        "unit": "manifests/s",
        "floor": round(floor_rate, 1),
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "seconds": round(orlojd_median, 4),
        "floor_seconds": round(floor_median, 4),
        "manifests": expected,
        "repeats": repeats,
        "quick": args.quick,
        "stages_seconds": {k: round(v, 4) for k, v in stages.items()},
        "help_seconds": round(help_median, 4),
        "help_floor_seconds": round(help_floor, 4),
        "help_target_seconds": HELP_TARGET_SECONDS,
        **provenance(),
    }
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
