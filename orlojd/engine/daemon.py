"""`orlojd serve`: the GitOps loop. A push is the deploy button; a bad commit never takes
down what already runs.

One pass (``Daemon.reconcile``): read the branch tip, record the commits a burst
skipped as superseded, verify signatures, read orlojd.yaml at that commit, plan and
apply. A bad commit (invalid manifests, a plan error, a refused prune, an unverified
signature) sets the source condition Stalled with the reasons; the last good revision
keeps running and the next commit is tried. Git and database failures are transient:
the pass is retried with backoff from 1 s to 15 min. Every resync (a periodic job of the
embedded scheduler, ``engine/runtime.py``) also looks for drift (objects changed in the
store outside git) and writes git's version back, unless the same object was corrected 5
times within an hour (Stalled, reason DriftLoop).

Once it holds the lock the daemon also runs the task side (``TaskRuntime``): the
scheduler and, from the first applied revision, the embedded worker pool.

Only the process holding the repository lock reconciles; another replica waits as a
hot standby. SIGTERM drains and exits 0, SIGHUP re-reads settings and reconciles.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orlojd.adapters import clock
from orlojd.adapters.gitrepo import run_git
from orlojd.adapters.locks import DaemonLock
from orlojd.adapters.signatures import SignaturePolicy, VerifyMode, verify
from orlojd.adapters.source import GitSource
from orlojd.adapters.sshsig import ensure_key
from orlojd.adapters.store import Store, StoreError
from orlojd.adapters.systemd import Notifier
from orlojd.core.keys import ResourceKey
from orlojd.core.webhooks import WebhookSecrets
from orlojd.engine.applying import ApplyRefused, apply_revision
from orlojd.engine.audit_outbox import AuditOutbox, periodic_drain
from orlojd.engine.planning import Planner
from orlojd.engine.runtime import TaskRuntime
from orlojd.engine.workspace import Workspace
from orlojd.errors import GitError, OrlojError
from orlojd.sources import settings_at

log = logging.getLogger("orlojd.daemon")

BACKOFF_MIN = 1.0
BACKOFF_MAX = 15 * 60.0
DRIFT_LOOP_LIMIT = 5
DRIFT_LOOP_WINDOW = 3600.0


@dataclass(frozen=True)
class DaemonOptions:
    repo: str
    branch: str
    state_dir: Path
    db_url: str
    listen: tuple[str, int] | None = None
    poll_interval: float = 60.0
    resync_interval: float = 600.0
    signatures: SignaturePolicy = field(default_factory=SignaturePolicy)
    webhook_secrets: WebhookSecrets = field(default_factory=WebhookSecrets)
    subdir: str = ""
    executor: str = "agent"
    workers: int | None = None  # embedded worker threads; None: workers.size from orlojd.yaml
    drain_grace: float = 20.0  # seconds SIGTERM waits for running tasks
    audit_key: Path | None = None  # signs the audit notes; None: systemd credential, else made in state_dir
    audit_every: float = 0.5  # seconds between drains of the audit outbox into notes


AUDIT_CREDENTIAL = "ssh-signing-key"  # systemd LoadCredential= name of the audit signing key (systemd/orlojd.service)


def _has_origin(repo: Path) -> bool:
    try:
        return bool(run_git(repo, "remote").decode().split().count("origin"))
    except GitError:
        return False


def _condition(kind: str, status: bool, reason: str, message: str, revision: str | None) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "lastAppliedRevision": revision or "",
        "lastTransitionTime": clock.now().isoformat().replace("+00:00", "Z"),
    }


class Daemon:
    """Reconciles one repository branch into one store until told to stop."""

    def __init__(self, options: DaemonOptions, env: Mapping[str, str]) -> None:
        self.options = options
        self.env = env
        self.notifier = Notifier.from_env(env)
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.reload = threading.Event()
        self.resync_due = threading.Event()
        self.store: Store | None = None
        self.source: GitSource | None = None
        self.outbox: AuditOutbox | None = None
        self.planner: Planner | None = None
        self.last_attempted: str | None = None
        self.ready = False
        self.corrections: dict[ResourceKey, deque[float]] = {}
        self.held: set[ResourceKey] = set()
        self.on_reconciled: Callable[[], None] | None = None
        self.runtime: TaskRuntime | None = None

    # -- signals and triggers ------------------------------------------------------------

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def request_stop(self) -> None:
        self.stop.set()
        self.wake.set()

    def request_reload(self) -> None:
        self.reload.set()
        self.wake.set()

    def request_resync(self) -> None:
        """The scheduler's resync job: look for drift and re-read the branch on the next pass."""
        self.resync_due.set()
        self.wake.set()

    def trigger(self) -> None:
        """Something may have been pushed: reconcile as soon as possible."""
        self.wake.set()

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        options = self.options
        self.store = Store.open(options.db_url)
        lock = DaemonLock(self.store.engine, options.state_dir, f"{options.repo}#{options.branch}")
        if not lock.try_acquire():
            message = f"standby: waiting for the repository lock held by {lock.holder()}"
            log.info(message, extra={"event": "standby"})
            # A standby is up and healthy: tell systemd so (READY, then watchdog pings while waiting),
            # or Type=notify would time it out and restart it in a loop.
            self.notifier.ready(message)
            if not lock.wait(self.stop, tick=self.notifier.watchdog):
                self.store.close()
                return 0
        log.info("lock acquired", extra={"event": "lock_acquired"})
        server = None
        try:
            self.runtime = TaskRuntime(
                self.store,
                options.executor,
                options.workers,
                periodic=[
                    ("resync", options.resync_interval, self.request_resync),
                    ("audit-notes", options.audit_every, periodic_drain(lambda: self.outbox)),
                ],
            )
            self.runtime.start()
            self.source = GitSource(options.repo, options.branch, options.state_dir)
            self.outbox = self._audit_outbox(self.source)
            if not self.source.is_remote:
                self.source.watch(self.trigger, self.stop)
            if options.listen is not None:
                from orlojd.engine.http import start_server

                server = start_server(options.listen, self)
            self._loop()
        finally:
            self.notifier.stopping("draining")
            if server is not None:
                server.shutdown()
            if self.runtime is not None:
                self.runtime.stop(options.drain_grace)
            self._flush_audit()
            lock.release()
            self.store.close()
            log.info("stopped", extra={"event": "stopped"})
        return 0

    def _loop(self) -> None:
        options = self.options
        backoff = 0.0
        next_attempt = 0.0
        next_poll = 0.0
        pending = True  # reconcile once at start
        resync = False
        while not self.stop.is_set():
            if self.wake.is_set():
                self.wake.clear()
                pending = True
            if self.resync_due.is_set():
                self.resync_due.clear()
                pending = resync = True
            now = time.monotonic()
            if self.source is not None and self.source.is_remote and now >= next_poll:
                pending = True
                jitter = options.poll_interval * 0.1
                next_poll = now + options.poll_interval + random.uniform(-jitter, jitter)
            if pending and now >= next_attempt:
                pending = False
                if self.reload.is_set():
                    self.reload.clear()
                    self.planner = None
                    self.last_attempted = None
                    log.info("reloading settings", extra={"event": "reload"})
                try:
                    self.reconcile(resync=resync)
                    resync = False
                    backoff = next_attempt = 0.0
                except (GitError, StoreError) as exc:
                    pending = True  # retried when the backoff is over, whatever else happens
                    backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, backoff * 2))
                    next_attempt = time.monotonic() + backoff
                    self._set_status("Reconciling", "TransientError", f"{exc.message}; retrying in {backoff:.0f}s")
                    log.warning("transient error: %s", exc.message, extra={"event": "reconcile_retry"})
            self.notifier.watchdog()
            deadlines = [time.monotonic() + options.resync_interval]  # the scheduler's resync job wakes us
            if pending:
                deadlines.append(next_attempt)
            if self.source is not None and self.source.is_remote:
                deadlines.append(next_poll)
            timeout = max(0.0, min(deadlines) - time.monotonic())
            if self.notifier.watchdog_interval is not None:
                timeout = min(timeout, self.notifier.watchdog_interval)
            self.wake.wait(timeout)

    # -- one pass ------------------------------------------------------------------------

    def reconcile(self, resync: bool = False) -> None:
        """One pass over the branch tip; raises GitError/StoreError only for transient failures.

        A transient failure leaves ``last_attempted`` as it was, so the retry after the
        backoff runs the whole pass again instead of taking the tip as already handled.
        """
        previous = self.last_attempted
        try:
            self._reconcile(resync)
        except (GitError, StoreError):
            self.last_attempted = previous
            raise

    def _reconcile(self, resync: bool) -> None:
        assert self.source is not None and self.store is not None
        started = clock.now()
        tip = self.source.refresh()
        if tip is None:
            self._set_status("Stalled", "BranchNotFound", f"branch {self.options.branch!r} does not exist yet")
            return
        if tip == self.last_attempted and not resync:
            return
        applied = self.store.applied_revision_one()
        skipped = self.source.commits_between(self.last_attempted or applied, tip)
        for commit in reversed(skipped):
            self.store.record_reconcile_run(commit, "superseded", {"by": tip}, started, clock.now())
        self.last_attempted = tip
        location = self.source.location
        if self.options.signatures.mode is not VerifyMode.OFF:
            verification = verify(location.repo, self.options.signatures, tip, applied)
            failure = verification.first_failure()
            if not verification.ok:
                reason = failure.reason if failure else "signature verification failed"
                where = failure.commit[:12] if failure else tip[:12]
                self._stalled(tip, "SignatureVerificationFailed", f"commit {where}: {reason}", started)
                return
        settings, problems = settings_at(location.repo, tip, self._prefix())
        if settings is None:
            self._stalled(tip, "InvalidSettings", "; ".join(d.format() for d in problems), started)
            return
        ws = Workspace(location.repo, location.repo, self._prefix(), settings, self.options.db_url)
        if self.planner is None or self.planner.ws != ws:
            self.planner = Planner(ws, self.store)
        if resync:
            self._correct_drift()
            self.planner.forget_inventory()
        try:
            result = apply_revision(ws, self.store, tip, planner=self.planner, hold=frozenset(self.held))
        except ApplyRefused as exc:
            self._stalled(tip, "ApplyRefused", exc.message, started)
            return
        except OrlojError as exc:
            if isinstance(exc, GitError | StoreError):
                raise
            self._stalled(tip, "ReconcileFailed", exc.message, started)
            return
        summary = result.planned.report.plan.summary
        message = (
            f"applied {tip[:12]}: {summary['create']} created, {summary['update']} updated, {summary['delete']} deleted"
            if result.written
            else f"{tip[:12]} is applied; nothing to change"
        )
        if self.held:
            names = ", ".join(k.short for k in sorted(self.held))
            self._set_status(
                "Stalled", "DriftLoop", f"{message}; not correcting {names}: drift keeps coming back", revision=tip
            )
        else:
            self._set_status("Ready", "Applied", message, revision=tip)
        log.info(message, extra={"event": "reconciled", "revision": tip})
        if self.runtime is not None:
            self.runtime.applied(settings, tip)
        if not self.ready:
            self.ready = True
            self.notifier.ready(message)
        else:
            self.notifier.status(message)
        if self.on_reconciled is not None:
            self.on_reconciled()

    def _prefix(self) -> str:
        subdir = self.options.subdir.strip("/")
        return f"{subdir}/" if subdir and subdir != "." else ""

    def _correct_drift(self) -> None:
        assert self.store is not None
        drifted = self.store.drifted_all()
        if not drifted:
            return
        now = time.monotonic()
        for key in drifted:
            seen = self.corrections.setdefault(key, deque())
            while seen and now - seen[0] > DRIFT_LOOP_WINDOW:
                seen.popleft()
            seen.append(now)
            if len(seen) >= DRIFT_LOOP_LIMIT:
                self.held.add(key)
        fix = [k for k in drifted if k not in self.held]
        log.warning("drift: %d objects changed outside git", len(drifted), extra={"event": "drift_detected"})
        self.store.mark_drifted_run(fix)

    def _stalled(self, tip: str, reason: str, message: str, started: Any) -> None:
        assert self.store is not None
        applied = self.store.applied_revision_one()
        keeps = f"; {applied[:12]} keeps running" if applied else ""
        flat = "; ".join(
            line.strip() for line in message.splitlines() if line.strip() and line.strip() != "apply refused:"
        )
        self._set_status("Stalled", reason, f"commit {tip[:12]}: {flat}{keeps}", revision=applied)
        if applied and self.runtime is not None and not self.runtime.pool_decided:
            self._start_runtime_at(applied)
        self.store.record_reconcile_run(
            tip, "stalled", {"reason": reason, "message": message[:2000]}, started, clock.now()
        )
        log.warning("%s: %s", reason, flat, extra={"event": "reconcile_stalled", "revision": tip})
        self.notifier.status(f"stalled: {reason}")
        if self.on_reconciled is not None:
            self.on_reconciled()

    def _audit_outbox(self, source: GitSource) -> AuditOutbox:
        """The outbox into the notes of the repository the daemon runs, signed with its key."""
        assert self.store is not None
        credential = None
        directory = self.env.get("CREDENTIALS_DIRECTORY")
        if self.options.audit_key is None and directory and (Path(directory) / AUDIT_CREDENTIAL).is_file():
            credential = AUDIT_CREDENTIAL
        key, generated = ensure_key(self.options.audit_key, credential, self.options.state_dir, self.env)
        if generated:
            log.warning(
                "made an audit signing key: %s; trust it with: orlojd audit verify --allowed-signers FILE "
                '(line: orlojd namespaces="git" %s)',
                key.path,
                key.public_line,
                extra={"event": "audit_key_created", "fingerprint": key.fingerprint},
            )
        log.info(
            "audit notes signed by %s",
            key.fingerprint,
            extra={"event": "audit_key", "fingerprint": key.fingerprint, "public_key": key.public_line},
        )
        remote = source.location.remote or ("origin" if _has_origin(source.location.repo) else None)
        return AuditOutbox(self.store, source.location.repo, key, remote)

    def _flush_audit(self) -> None:
        """At shutdown: note what is left in the outbox (a kill -9 skips this; the next start catches up)."""
        if self.outbox is None:
            return
        try:
            self.outbox.drain_all()
        except Exception as exc:
            log.warning("audit flush at shutdown failed: %s", exc, extra={"event": "audit_drain_error"})

    def _start_runtime_at(self, revision: str) -> None:
        """Run the tasks of the last good revision while a bad commit waits for its fix (after a restart)."""
        assert self.source is not None and self.runtime is not None
        settings, _ = settings_at(self.source.location.repo, revision, self._prefix())
        if settings is not None:
            self.runtime.applied(settings, revision)

    def _set_status(self, condition: str, reason: str, message: str, revision: str | None = None) -> None:
        if self.store is None:
            return
        conditions = [
            _condition(kind, kind == condition, reason, message, revision)
            for kind in ("Ready", "Reconciling", "Stalled")
        ]
        status = {
            "repo": self.options.repo,
            "branch": self.options.branch,
            "revision_seen": self.last_attempted,
            "conditions": conditions,
        }
        try:
            self.store.source_status_run(status)
        except StoreError as exc:
            log.warning("cannot record status: %s", exc.message, extra={"event": "status_failed"})
