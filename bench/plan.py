"""Benchmark: plan 10,000 objects with 1% changed, cold and warm, each beside its floor.

Workload: the deterministic 10k-manifest repository of bench/load.py (commit A),
applied to a fresh SQLite store; then commit B edits 100 files (1%) and commit C
edits one file of A. Measured in the same run, medians of several repeats:

* cold plan: a new ``Planner`` plans B against the inventory of A (reads the whole
  commit, validates, digests, diffs the 100 changed objects, governance diff);
  floor: the load floor of bench/load.py (ls-tree + cat-file --batch + CSafeLoader).
  Target: within 3x of that floor.
* warm plan: a ``Planner`` that has already planned A plans C (one file changed
  since the applied commit): only ``git diff --name-only`` paths are read again.
  Floor: ``git diff --name-only`` + cat-file of the changed paths + CSafeLoader.
  Target: under 100 ms.

    .venv/bin/python bench/plan.py [--quick]

The last line printed is one JSON object (see bench/README.md).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from load import PER_FOLDER, WORK, build_repo, floor_load, generate, git, provenance

METRIC = "warm_plan_10k"
WARM_TARGET_MS = 100.0
COLD_TARGET_RATIO = 3.0
CHANGED_FRACTION = 0.01


def edit(content: bytes, serial: int) -> bytes:
    """A real change to one manifest: a new label value (every object has labels)."""
    return content.replace(b"  labels:\n", b"  labels:\n    bench-edit: e%d\n" % serial, 1)


def commit_edits(repo: Path, parent: str, branch: str, files: dict[str, bytes]) -> str:
    """A commit on ``branch`` from ``parent`` that rewrites ``files``; returns its id."""
    stream = io.BytesIO()
    for mark, content in enumerate(files.values(), start=1):
        stream.write(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(content), content))
    message = b"bench: edit\n"
    stream.write(b"commit refs/heads/%s\n" % branch.encode())
    stream.write(b"committer orlojd bench <bench@example.invalid> 1764000100 +0000\n")
    stream.write(b"data %d\n%s" % (len(message), message))
    stream.write(b"from %s\n" % parent.encode())
    for mark, path in enumerate(files, start=1):
        stream.write(b"M 100644 :%d %s\n" % (mark, path.encode()))
    git(repo, "fast-import", "--quiet", "--force", stdin=stream.getvalue())
    return git(repo, "rev-parse", branch).decode().strip()


def floor_incremental(repo: Path, old: str, new: str) -> int:
    """git diff --name-only + one cat-file --batch of the changed paths + CSafeLoader."""
    names = [p for p in git(repo, "diff", "--name-only", "-z", old, new).split(b"\0") if p]
    specs = b"".join(new.encode() + b":" + p + b"\n" for p in names)
    out = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch"], input=specs, capture_output=True, check=True
    ).stdout
    documents, pos = 0, 0
    for _ in names:
        end = out.index(b"\n", pos)
        size = int(out[pos:end].split()[2])
        blob = out[end + 1 : end + 1 + size]
        pos = end + 2 + size
        documents += sum(1 for d in yaml.load_all(blob, Loader=yaml.CSafeLoader) if d is not None)
    return documents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats; finishes in under 60 s")
    parser.add_argument("--folders", type=int, default=100, help="folders of 100 manifests (default 100)")
    args = parser.parse_args(argv)
    cold_repeats, warm_repeats = (3, 15) if args.quick else (7, 50)
    expected = args.folders * PER_FOLDER

    from orlojd.adapters.store import Store
    from orlojd.core.plan import Action
    from orlojd.engine.applying import apply_revision
    from orlojd.engine.planning import Planner
    from orlojd.engine.workspace import open_workspace

    WORK.mkdir(exist_ok=True)
    repo = Path(tempfile.mkdtemp(prefix="plan-", dir=WORK))
    try:
        start = time.perf_counter()
        build_repo(repo, args.folders)
        base = git(repo, "rev-parse", "HEAD").decode().strip()
        contents = dict(generate(args.folders))
        paths = sorted(contents)
        step = int(1 / CHANGED_FRACTION)
        changed = {p: edit(contents[p], i) for i, p in enumerate(paths[::step])}
        one = {paths[len(paths) // 2]: edit(contents[paths[len(paths) // 2]], 99_999)}
        many_commit = commit_edits(repo, base, "many", changed)
        one_commit = commit_edits(repo, base, "one", one)
        ws = open_workspace(repo, f"sqlite:///{repo / 'state.db'}")
        store = Store.open(ws.db_url)
        applied = apply_revision(ws, store, base)
        print(
            f"workload: {expected:,} manifests; {len(changed)} edited in B, 1 in C; repo and first apply "
            f"in {time.perf_counter() - start:.1f} s; applied {applied.planned.report.plan.summary['create']:,}"
        )

        def cold() -> float:
            began = time.perf_counter()
            report = Planner(ws, store).plan(many_commit).report
            seconds = time.perf_counter() - began
            assert not report.plan.errors, report.plan.errors[:3]
            assert report.plan.count(Action.CONFIGURED) == len(changed), report.plan.summary
            return seconds

        primed = Planner(ws, store)
        primed.plan(base)

        def warm() -> float:
            planner = Planner(ws, store)  # starts from the primed state: A loaded, inventory read
            planner.loaded, planner._digests = primed.loaded, primed._digests
            began = time.perf_counter()
            report = planner.plan(one_commit).report
            seconds = time.perf_counter() - began
            assert report.plan.count(Action.CONFIGURED) == 1, report.plan.summary
            return seconds

        def timed(fn: object) -> float:
            began = time.perf_counter()
            assert callable(fn)
            fn()
            return time.perf_counter() - began

        cold_s, load_floor_s = [], []
        for _ in range(cold_repeats):
            load_floor_s.append(timed(lambda: floor_load(repo)))
            cold_s.append(cold())
        warm_s, inc_floor_s = [], []
        for _ in range(warm_repeats):
            inc_floor_s.append(timed(lambda: floor_incremental(repo, base, one_commit)))
            warm_s.append(warm())
        store.close()

        cold_median, load_floor = statistics.median(cold_s), statistics.median(load_floor_s)
        warm_median, inc_floor = statistics.median(warm_s), statistics.median(inc_floor_s)
        cold_ratio = cold_median / load_floor
        warm_ratio = warm_median / inc_floor
        print(
            f"cold plan (10k, 1% changed): median {cold_median * 1000:,.0f} ms; load floor "
            f"{load_floor * 1000:,.0f} ms; ratio {cold_ratio:.2f}x (target <= {COLD_TARGET_RATIO}x): "
            f"{'meets' if cold_ratio <= COLD_TARGET_RATIO else 'MISSES'}"
        )
        print(
            f"warm plan (1 file changed):  median {warm_median * 1000:,.1f} ms; incremental floor "
            f"{inc_floor * 1000:,.1f} ms; ratio {warm_ratio:.2f}x; target < {WARM_TARGET_MS:.0f} ms: "
            f"{'meets' if warm_median * 1000 < WARM_TARGET_MS else 'MISSES'}"
        )
        result = {
            "metric": METRIC,
            "value": round(warm_median * 1000, 2),
            "unit": "ms",
            "floor": round(inc_floor * 1000, 2),
            "ratio": round(warm_ratio, 2),
            "target": WARM_TARGET_MS,
            "cold_ms": round(cold_median * 1000, 1),
            "cold_floor_ms": round(load_floor * 1000, 1),
            "cold_ratio": round(cold_ratio, 2),
            "cold_target_ratio": COLD_TARGET_RATIO,
            "objects": expected,
            "changed_cold": len(changed),
            "quick": args.quick,
            **provenance(),
        }
        print(json.dumps(result, sort_keys=True))
        return 0
    finally:
        shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
