"""Benchmark: time from ``git push`` returning to the new revision applied by ``orlojd serve``.

Workload: a repository of 100 canonical manifests (one folder of bench/load.py's
``generate(1)``), pushed to a real bare origin. ``orlojd serve --repo <bare>
--state-dir <tmp>`` runs as a subprocess and watches the bare repository. A clone then
makes N commits, each changing one file (a new value of a ``bench-push`` label in one
manifest), and pushes each one. Measured per push, in the same run on the same pushes:

* orlojd: from ``git push`` returning until the benchmark sees the pushed commit as
  the store's ``applied_revision`` (SQLite, polled every 2 ms through one ``Store``);
* floor: from ``git push`` returning until a ``watchfiles.watch`` thread in the
  benchmark process, on the same bare repository with the daemon's filter (``refs/``
  and ``packed-refs``) and the daemon's step=10 ms, debounce=20 ms, yields an event:
  the earliest a watching daemon can know that something was pushed.

Reported: p50 and p95 of both. The target is absolute: p50 under 300 ms. For scale,
the default polling intervals of Flux (1 min, 30 s on average) and Argo CD (3 min,
90 s on average) are printed beside them as fixed reference points (not measured).

    .venv/bin/python bench/push_latency.py            # 50 pushes, about 20 s
    .venv/bin/python bench/push_latency.py --quick    # 20 pushes, about 12 s

The last line printed is one JSON object (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import watchfiles
from load import WORK, generate, git, percentile, provenance

METRIC = "push_to_applied_p50"
TARGET_MS = 300.0
POLL_SECONDS = 0.002
STEP_MS = 10  # what orlojd.adapters.source.GitSource.watch uses
DEBOUNCE_MS = 20
WARMUP_PUSHES = 2
FLUX_POLL_DEFAULT_S = 60  # Flux: `flux create source git` / `flux bootstrap` set GitRepository interval 1m
ARGOCD_POLL_DEFAULT_S = 180  # Argo CD: argocd-cm timeout.reconciliation, default 180s
APPLY_TIMEOUT_S = 30.0
GIT_FLAGS = ("-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null")


class RefWatcher:
    """The floor: a watchfiles thread on the bare repository, as the daemon watches it."""

    def __init__(self, gitdir: Path) -> None:
        self.gitdir = gitdir
        self.events: list[float] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="floor-watch", daemon=True)

    def _relevant(self, _change: object, path: str) -> bool:
        root = str(self.gitdir)
        rel = Path(path).relative_to(self.gitdir).as_posix() if path.startswith(root) else ""
        return rel == "packed-refs" or rel.startswith("refs/") or rel == "refs"

    def _run(self) -> None:
        for _changes in watchfiles.watch(
            self.gitdir,
            watch_filter=self._relevant,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            stop_event=self.stop,
            raise_interrupt=False,
            rust_timeout=1000,
            yield_on_timeout=False,
        ):
            now = time.perf_counter()
            with self.lock:
                self.events.append(now)

    def first_after(self, since: float, timeout: float) -> float | None:
        deadline = time.perf_counter() + timeout
        while True:
            with self.lock:
                later = [t for t in self.events if t >= since]
            if later:
                return later[0]
            if time.perf_counter() > deadline:
                return None
            time.sleep(0.001)


def wait_for_log(path: Path, text: str, daemon: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"orlojd serve exited with {daemon.returncode}: {path.read_text(errors='replace')}")
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.01)
    raise SystemExit(f"orlojd serve did not log {text!r} within {timeout:.0f} s: see {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 pushes instead of 50; under 60 s")
    parser.add_argument("--pushes", type=int, default=None, help="override the number of measured pushes")
    parser.add_argument("--gap", type=float, default=0.1, help="idle seconds between pushes (default 0.1)")
    parser.add_argument("--keep", action="store_true", help="keep the repositories and serve.log in bench/.work")
    args = parser.parse_args(argv)
    pushes = args.pushes or (20 if args.quick else 50)

    from orlojd.adapters.store import Store, sqlite_url

    began = time.perf_counter()
    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="push-", dir=WORK))
    clone, origin, state = root / "clone", root / "origin.git", root / "state"
    daemon: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    watcher: RefWatcher | None = None
    store: Store | None = None
    exit_code: int | None = None
    try:
        # -- the repositories: a bare origin and a clone holding 100 manifests --------------
        originals = dict(generate(1))
        git(root, "init", "--quiet", "--bare", "--initial-branch", "main", str(origin))
        git(root, "init", "--quiet", "--initial-branch", "main", str(clone))
        for rel, content in originals.items():
            path = clone / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        git(clone, "add", "--all")
        git(clone, *GIT_FLAGS, "commit", "--quiet", "-m", "bench: 100 manifests")
        git(clone, "remote", "add", "origin", str(origin))
        git(clone, "push", "--quiet", "--set-upstream", "origin", "main")
        first = git(clone, "rev-parse", "HEAD").decode().strip()
        paths = sorted(originals)

        # -- the daemon, then the floor watcher on the same bare repository -------------------
        state.mkdir()
        log_path = state / "serve.log"
        log = log_path.open("wb")
        command = [sys.executable, "-m", "orlojd", "serve", "--repo", str(origin), "--state-dir", str(state)]
        started = time.perf_counter()
        daemon = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_log(log_path, "lock acquired", daemon, 60)  # the store is migrated by then
        store = Store.open(sqlite_url(state))
        polls = 0
        poll_seconds = 0.0

        def wait_applied(commit: str) -> float:
            """perf_counter of the first poll that sees ``commit`` applied."""
            nonlocal polls, poll_seconds
            assert store is not None and daemon is not None
            deadline = time.perf_counter() + APPLY_TIMEOUT_S
            while True:
                before = time.perf_counter()
                applied = store.applied_revision_one()
                seen = time.perf_counter()
                polls += 1
                poll_seconds += seen - before
                if applied == commit:
                    return seen
                if seen > deadline or daemon.poll() is not None:
                    raise SystemExit(f"{commit[:12]} not applied (daemon exit {daemon.returncode}); see {log_path}")
                time.sleep(POLL_SECONDS)

        wait_applied(first)
        startup = time.perf_counter() - started
        watcher = RefWatcher(origin)
        watcher.thread.start()
        time.sleep(0.2)  # let the inotify watches settle
        print(
            f"workload: {len(paths)} manifests in a bare origin ({root}); orlojd serve applied the first "
            f"revision {startup:.2f} s after start"
        )

        # -- the pushes ---------------------------------------------------------------------------
        applied_ms: list[float] = []
        event_ms: list[float] = []
        push_ms: list[float] = []
        early = 0
        for serial in range(WARMUP_PUSHES + pushes):
            rel = paths[serial % len(paths)]
            content = originals[rel].replace(b"  labels:\n", b"  labels:\n    bench-push: p%d\n" % serial, 1)
            (clone / rel).write_bytes(content)
            git(clone, *GIT_FLAGS, "commit", "--quiet", "-am", f"bench: push {serial}")
            commit = git(clone, "rev-parse", "HEAD").decode().strip()
            time.sleep(args.gap)  # daemon and watcher idle before the clock starts
            start = time.perf_counter()
            git(clone, "push", "--quiet", "origin", "main")
            returned = time.perf_counter()
            seen = wait_applied(commit)
            event = watcher.first_after(start, timeout=2.0)
            if event is None:
                raise SystemExit(f"the floor watcher saw no event for push {serial}")
            if serial < WARMUP_PUSHES:
                continue
            applied_ms.append((seen - returned) * 1000)
            event_ms.append((event - returned) * 1000)
            push_ms.append((returned - start) * 1000)
            early += event < returned

        # -- stop the daemon: SIGTERM must drain and exit 0 ---------------------------------------
        daemon.send_signal(signal.SIGTERM)
        try:
            exit_code = daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
            raise SystemExit("orlojd serve did not exit within 30 s of SIGTERM") from None
        if exit_code != 0:
            raise SystemExit(f"orlojd serve exited {exit_code} after SIGTERM; see {log_path}")
    finally:
        if watcher is not None:
            watcher.stop.set()
            watcher.thread.join(timeout=5)
        if store is not None:
            store.close()
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if log is not None:
            log.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    p50, p95 = statistics.median(applied_ms), percentile(applied_ms, 95)
    floor_p50, floor_p95 = statistics.median(event_ms), percentile(event_ms, 95)
    ratio = p50 / floor_p50
    poll_cost_ms = poll_seconds / polls * 1000
    print(f"git push itself: median {statistics.median(push_ms):.1f} ms (local, file transport)")
    print(
        f"floor  push returned -> watchfiles event (step {STEP_MS} ms, debounce {DEBOUNCE_MS} ms): "
        f"p50 {floor_p50:.1f} ms, p95 {floor_p95:.1f} ms, min {min(event_ms):.1f}, max {max(event_ms):.1f}"
        f"{f'; {early} events came before push returned' if early else ''}"
    )
    print(
        f"orlojd push returned -> revision applied in the store: p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
        f"min {min(applied_ms):.1f}, max {max(applied_ms):.1f}  ({pushes} pushes after {WARMUP_PUSHES} warm-up)"
    )
    print(
        f"       polled every {POLL_SECONDS * 1000:.0f} ms + {poll_cost_ms:.2f} ms per query: a figure is late by "
        f"at most {POLL_SECONDS * 1000 + 2 * poll_cost_ms:.1f} ms"
    )
    print(
        f"ratio {ratio:.2f}x the floor; target p50 < {TARGET_MS:.0f} ms: "
        f"{'meets' if p50 < TARGET_MS else 'MISSES'}; orlojd serve exited {exit_code} on SIGTERM"
    )
    print(
        f"reference (not measured): default polling of Flux {FLUX_POLL_DEFAULT_S} s (average "
        f"{FLUX_POLL_DEFAULT_S / 2:.0f} s after a push), Argo CD {ARGOCD_POLL_DEFAULT_S} s (average "
        f"{ARGOCD_POLL_DEFAULT_S / 2:.0f} s): {FLUX_POLL_DEFAULT_S / 2 * 1000 / p50:,.0f}x and "
        f"{ARGOCD_POLL_DEFAULT_S / 2 * 1000 / p50:,.0f}x orlojd's p50"
    )
    print(f"total {time.perf_counter() - began:.1f} s")
    result = {
        "metric": METRIC,
        "value": round(p50, 1),
        "unit": "ms",
        "floor": round(floor_p50, 1),
        "ratio": round(ratio, 2),
        "target": TARGET_MS,
        "p95": round(p95, 1),
        "floor_p95": round(floor_p95, 1),
        "pushes": pushes,
        "warmup_pushes": WARMUP_PUSHES,
        "git_push_ms": round(statistics.median(push_ms), 1),
        "poll_interval_ms": POLL_SECONDS * 1000,
        "poll_query_ms": round(poll_cost_ms, 2),
        "watch_step_ms": STEP_MS,
        "watch_debounce_ms": DEBOUNCE_MS,
        "startup_s": round(startup, 2),
        "sigterm_exit": exit_code,
        "flux_poll_default_s": FLUX_POLL_DEFAULT_S,
        "argocd_poll_default_s": ARGOCD_POLL_DEFAULT_S,
        "quick": args.quick,
        **provenance(),
    }
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
