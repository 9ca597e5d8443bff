"""`orlojd serve` (the GitOps daemon with its embedded workers) and `orlojd worker` (scale-out).

Both parse their flags (each with an ``ORLOJD_*`` variable), turn bad values into one
``error:`` line, and hand a frozen options object to the engine.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from orlojd.cli_options import DbOption, fail


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def _seconds(value: str, flag: str) -> float:
    from orlojd.core.durations import DurationError, parse_ms

    try:
        seconds = parse_ms(value) / 1000
    except DurationError as exc:
        fail(f"{flag}: {exc}")
    if seconds <= 0:
        fail(f"{flag}: must be more than 0s")
    return seconds


def _listen(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--listen {value!r}: use HOST:PORT, for example 127.0.0.1:8080")
    return host, int(port)


def _secret(path: Path | None, credential: str, env: dict[str, str]) -> bytes | None:
    if path is None and env.get("CREDENTIALS_DIRECTORY"):
        candidate = Path(env["CREDENTIALS_DIRECTORY"]) / credential
        path = candidate if candidate.is_file() else None
    if path is None:
        return None
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", "check the path and its permissions")


ExecutorOption = Annotated[
    str,
    typer.Option("--executor", envvar="ORLOJD_EXECUTOR", hidden=True, help="What runs a task (tests, benchmarks)"),
]


def _executor(spec: str) -> str:
    from orlojd.engine.executors import NAMES, known

    if not known(spec):
        fail(f"--executor {spec!r}: unknown executor", f"use {NAMES}")
    return spec


def _labels(values: list[str]) -> dict[str, str]:
    from orlojd.core.manifests.tasks import LABEL_KEY

    labels: dict[str, str] = {}
    for value in values:
        key, sep, label = value.partition("=")
        if not sep or not LABEL_KEY.match(key) or not label:
            fail(f"--label {value!r}: use KEY=VALUE, for example --label region=eu or --label gpu=true")
        labels[key] = label
    return labels


def serve(
    repo: Annotated[str, typer.Option("--repo", envvar="ORLOJD_REPO", help="Local repository path or remote URL")],
    branch: Annotated[str, typer.Option("--branch", envvar="ORLOJD_BRANCH", help="Branch to apply")] = "main",
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", envvar="ORLOJD_STATE_DIR", help="State folder (SQLite, mirror)")
    ] = None,
    db: DbOption = None,
    listen: Annotated[
        str | None, typer.Option("--listen", envvar="ORLOJD_LISTEN", help="HOST:PORT for webhooks and health")
    ] = None,
    subdir: Annotated[str, typer.Option("--path", envvar="ORLOJD_PATH", help="Manifests folder in the repo")] = "",
    poll_interval: Annotated[
        str, typer.Option("--poll-interval", envvar="ORLOJD_POLL_INTERVAL", help="Remote polling period")
    ] = "60s",
    resync_interval: Annotated[
        str, typer.Option("--resync-interval", envvar="ORLOJD_RESYNC_INTERVAL", help="Drift check period")
    ] = "10m",
    verify_mode: Annotated[
        str, typer.Option("--verify", envvar="ORLOJD_VERIFY", help="Commit signatures: off, head or all")
    ] = "off",
    allowed_signers: Annotated[
        Path | None, typer.Option("--allowed-signers", envvar="ORLOJD_ALLOWED_SIGNERS", help="SSH allowed_signers")
    ] = None,
    gnupg_home: Annotated[
        Path | None, typer.Option("--gnupg-home", envvar="ORLOJD_GNUPG_HOME", help="OpenPGP keyring folder")
    ] = None,
    webhook_secret_file: Annotated[
        Path | None,
        typer.Option("--webhook-secret-file", envvar="ORLOJD_WEBHOOK_SECRET_FILE", help="HMAC key (GitHub, generic)"),
    ] = None,
    gitlab_token_file: Annotated[
        Path | None, typer.Option("--gitlab-token-file", envvar="ORLOJD_GITLAB_TOKEN_FILE", help="GitLab token")
    ] = None,
    log_format: Annotated[LogFormat, typer.Option("--log-format", envvar="ORLOJD_LOG_FORMAT")] = LogFormat.text,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", envvar="ORLOJD_WORKERS", min=0, help="Embedded worker threads (default: workers.size)"
        ),
    ] = None,
    executor: ExecutorOption = "agent",
    audit_key: Annotated[
        Path | None,
        typer.Option(
            "--audit-key",
            envvar="ORLOJD_AUDIT_KEY",
            help="Ed25519 SSH private key that signs the audit notes (default: the systemd credential "
            "ssh-signing-key, else audit_ed25519 in the state folder, made on first start)",
        ),
    ] = None,
    audit_every: Annotated[
        str,
        typer.Option(
            "--audit-every", envvar="ORLOJD_AUDIT_EVERY", hidden=True, help="Period of the audit outbox drain"
        ),
    ] = "500ms",
) -> None:
    """Run the GitOps daemon: apply every new commit of the branch, hold the last good one on errors."""
    from orlojd import logs
    from orlojd.adapters.signatures import SignaturePolicy, VerifyMode
    from orlojd.adapters.store import sqlite_url
    from orlojd.core.webhooks import WebhookSecrets
    from orlojd.engine.daemon import Daemon, DaemonOptions

    logs.setup(log_format.value)
    env = dict(os.environ)
    if verify_mode not in {m.value for m in VerifyMode}:
        fail(f"--verify {verify_mode!r}: use off, head or all")
    mode = VerifyMode(verify_mode)
    if mode is not VerifyMode.OFF and allowed_signers is None and gnupg_home is None:
        fail(f"--verify {verify_mode} needs --allowed-signers FILE (SSH) or --gnupg-home DIR (OpenPGP)")
    if state_dir is None:
        local = Path(repo)
        state_dir = (local / ".orlojd") if (local / ".git").exists() else Path(".orlojd")
    state_dir = state_dir.resolve()
    secret = _secret(webhook_secret_file, "webhook-secret", env)
    options = DaemonOptions(
        repo=repo,
        branch=branch,
        state_dir=state_dir,
        db_url=db or sqlite_url(state_dir),
        listen=_listen(listen),
        poll_interval=_seconds(poll_interval, "--poll-interval"),
        resync_interval=_seconds(resync_interval, "--resync-interval"),
        signatures=SignaturePolicy(mode, allowed_signers, gnupg_home),
        webhook_secrets=WebhookSecrets(
            github=secret, gitlab=_secret(gitlab_token_file, "gitlab-token", env), generic=secret
        ),
        subdir=subdir,
        executor=_executor(executor),
        workers=workers,
        audit_key=audit_key,
        audit_every=_seconds(audit_every, "--audit-every"),
    )
    daemon = Daemon(options, env)
    daemon.install_signals()
    raise typer.Exit(daemon.run())


def worker(
    db: Annotated[
        str | None,
        typer.Option("--db", envvar="ORLOJD_DB", help="The shared queue: a postgresql:// URL (the daemon's store)"),
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option("--id", envvar="ORLOJD_WORKER_ID", help="Worker id (default: worker-HOST-PID)")
    ] = None,
    capacity: Annotated[
        int, typer.Option("--capacity", envvar="ORLOJD_WORKER_CAPACITY", min=1, max=256, help="Tasks run at once")
    ] = 4,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            envvar="ORLOJD_WORKER_LABELS",
            help="A label this worker offers, KEY=VALUE (repeatable): region=eu, gpu=true (variable: space-separated)",
        ),
    ] = None,
    lease: Annotated[str, typer.Option("--lease", envvar="ORLOJD_WORKER_LEASE", help="Task lease")] = "30s",
    drain_grace: Annotated[
        str, typer.Option("--drain-grace", envvar="ORLOJD_DRAIN_GRACE", help="How long SIGTERM waits for tasks")
    ] = "20s",
    log_format: Annotated[LogFormat, typer.Option("--log-format", envvar="ORLOJD_LOG_FORMAT")] = LogFormat.text,
    executor: ExecutorOption = "agent",
) -> None:
    """Run tasks from the shared PostgreSQL queue (scale-out): any number, on any machine."""
    import signal
    import threading
    from datetime import timedelta

    from orlojd import logs
    from orlojd.adapters.store import Store
    from orlojd.adapters.systemd import Notifier
    from orlojd.engine.runtime import default_worker_id, run_worker
    from orlojd.engine.workers import PoolOptions

    if not db:
        fail("orlojd worker needs --db postgresql://... (or ORLOJD_DB): the queue it shares with orlojd serve")
    if not (db.startswith("postgresql://") or db.startswith("postgres://") or db.startswith("postgresql+")):
        fail(
            f"--db {db.split('://')[0]}://...: orlojd worker runs only against PostgreSQL",
            "on SQLite the workers live inside orlojd serve (workers.size in orlojd.yaml, or serve --workers N): "
            "SQLite's write lock is unfair between processes",
        )
    logs.setup(log_format.value)
    lease_seconds = _seconds(lease, "--lease")
    options = PoolOptions(
        size=capacity,
        lease=timedelta(seconds=lease_seconds),
        renew_every=timedelta(seconds=lease_seconds / 3),
        labels=_labels(label or []),
    )
    grace = _seconds(drain_grace, "--drain-grace")
    spec = _executor(executor)
    store = Store.open(db)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    try:
        code = run_worker(
            store, options, worker_id or default_worker_id("worker"), spec, stop, Notifier.from_env(os.environ), grace
        )
    finally:
        store.close()
    raise typer.Exit(code)
