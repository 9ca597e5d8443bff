"""The approval webhook: each approval request is POSTed as JSON to ``approvals.webhook``.

A real HTTP server on a free port of 127.0.0.1 receives it; no mocks.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest

from orlojd.adapters.approvals import ApprovalState, ApprovalView
from orlojd.core.call_policy import CallPolicy
from orlojd.engine.gate import webhook_notifier

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[HTTPServer]:
    Receiver.received = []
    httpd = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def view() -> ApprovalView:
    return ApprovalView(
        id="ap-0123456789ab",
        task_id="t1",
        agent="Agent/default/compliance-checker",
        tool="flag-issues",
        digest="sha256:" + "0" * 64,
        preview='{"title":"Q3 gap"}',
        needs=[["write", "issue_tracker"]],
        because=[],
        state=ApprovalState.PENDING,
        requested_by="author@example.invalid",
        policy=CallPolicy(approvers=frozenset({"alice@example.com"})),
        requested_at=T0,
        expires_at=T0 + timedelta(hours=1),
        decided_at=None,
        decision_reason=None,
    )


def test_an_approval_request_is_posted_as_json(server: HTTPServer) -> None:
    notify = webhook_notifier(f"http://127.0.0.1:{server.server_address[1]}/hooks/approvals")
    notify(view())
    ((content_type, body),) = Receiver.received
    assert content_type == "application/json"
    assert body["event"] == "approval_requested"
    approval = body["approval"]
    assert (approval["id"], approval["tool"], approval["approvers"], approval["state"]) == (
        "ap-0123456789ab",
        "flag-issues",
        ["alice@example.com"],
        "pending",
    )


def test_an_unreachable_webhook_raises_for_the_gate_to_log(server: HTTPServer) -> None:
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with pytest.raises(OSError):
        webhook_notifier(f"http://127.0.0.1:{port}/gone", timeout=2.0)(view())
