"""The daemon's HTTP listener: webhook deliveries and health, on a small threaded server.

``POST /webhook`` (or ``/hooks/<anything>``) checks the signature (core.webhooks) and,
when it holds, only wakes the reconcile loop: the payload is never trusted for
content, the daemon reads the branch tip itself. ``GET /healthz`` answers 200 while
the process runs; ``GET /readyz`` answers 200 once a revision is applied, 503 before.
Bodies over 1 MiB are refused before they are read.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from orlojd.core.webhooks import MAX_BODY_BYTES, ReplayGuard, verify
from orlojd.errors import OrlojError

if TYPE_CHECKING:
    from orlojd.engine.daemon import Daemon

log = logging.getLogger("orlojd.http")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], daemon: Daemon) -> None:
        super().__init__(address, _Handler)
        self.orlojd = daemon
        self.guard = ReplayGuard()
        self.guard_lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args, extra={"event": "http_request"})

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        daemon = self.server.orlojd
        if self.path == "/healthz":
            self._reply(200, {"status": "ok"})
        elif self.path == "/readyz":
            self._reply(200 if daemon.ready else 503, {"ready": daemon.ready, "revision": daemon.last_attempted})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        if not (self.path == "/webhook" or self.path.startswith("/hooks/")):
            self._reply(404, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            self._reply(411, {"accepted": False, "reason": "Content-Length required"})
            return
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is not read, so the connection cannot be reused
            self._reply(413, {"accepted": False, "reason": f"body over {MAX_BODY_BYTES} bytes"})
            return
        body = self.rfile.read(length)
        headers: dict[str, str] = {}
        for name in set(self.headers.keys()):
            values = set(self.headers.get_all(name) or [])
            # A header sent twice with different values must not be silently narrowed to one.
            headers[name] = values.pop() if len(values) == 1 else "\x00conflicting values"
        with self.server.guard_lock:
            verdict = verify(headers, body, self.server.orlojd.options.webhook_secrets, time.time(), self.server.guard)
        if verdict.accepted:
            self.server.orlojd.trigger()
        log.info(
            "webhook %s: %s",
            verdict.status,
            verdict.reason,
            extra={"event": "webhook", "provider": str(verdict.provider)},
        )
        self._reply(verdict.status, {"accepted": verdict.accepted, "reason": verdict.reason})


def start_server(address: tuple[str, int], daemon: Daemon) -> ThreadingHTTPServer:
    """Serve in a background thread; the caller shuts it down. A port in use is the user's error, said so."""
    try:
        server = _Server(address, daemon)
    except OSError as exc:
        raise OrlojError(
            f"cannot listen on {address[0]}:{address[1]}: {exc.strerror}",
            "choose a free --listen HOST:PORT, or stop what uses it",
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="orlojd-http", daemon=True)
    thread.start()
    log.info("listening on %s:%d", *server.server_address[:2], extra={"event": "http_listening"})
    return server
