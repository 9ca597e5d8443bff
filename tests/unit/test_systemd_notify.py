"""sd_notify over a real unix datagram socket: what systemd would receive, byte for byte."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orlojd.adapters.systemd import Notifier


def _receive(sock: socket.socket) -> bytes:
    sock.settimeout(2.0)
    return sock.recv(4096)


def _nothing_queued(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in tmp_path and its NOTIFY_SOCKET value."""
    address = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
        yield sock, str(address)


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the abstract namespace and its '@name' NOTIFY_SOCKET value."""
    name = f"orlojd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield sock, "@" + name


def test_ready_sends_ready_and_status(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready("serving main@abc123")
    assert _receive(sock) == b"READY=1\nSTATUS=serving main@abc123"
    assert _nothing_queued(sock)


def test_ready_without_status_sends_ready_only(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    Notifier.from_env({"NOTIFY_SOCKET": address}).ready()
    assert _receive(sock) == b"READY=1"


def test_each_call_is_one_datagram(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    notifier.status("applying abc123\nsecond line")
    notifier.watchdog()
    notifier.stopping("draining 3 tasks")
    notifier.stopping()
    assert _receive(sock) == b"STATUS=applying abc123 second line"
    assert _receive(sock) == b"WATCHDOG=1"
    assert _receive(sock) == b"STOPPING=1\nSTATUS=draining 3 tasks"
    assert _receive(sock) == b"STOPPING=1"
    assert _nothing_queued(sock)


def test_reloading_carries_the_monotonic_clock(path_socket: tuple[socket.socket, str]) -> None:
    sock, address = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = _receive(sock).decode().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_namespace_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, address = abstract_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready("up")
    assert notifier.watchdog()
    assert _receive(sock) == b"READY=1\nSTATUS=up"
    assert _receive(sock) == b"WATCHDOG=1"


def test_no_notify_socket_is_a_no_op(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    with caplog.at_level(logging.DEBUG, logger="orlojd.adapters.systemd"):
        assert not notifier.ready("x")
        assert not notifier.status("x")
        assert not notifier.watchdog()
        assert not notifier.stopping()
        assert not notifier.reloading()
    assert caplog.records == []


def test_unsupported_address_disables_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="orlojd.adapters.systemd"):
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    assert [r.__dict__["event"] for r in caplog.records] == ["notify_socket_unsupported"]


def test_vanished_socket_logs_and_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    address = tmp_path / "gone.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(address))
    address.unlink()
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(address)})
    with caplog.at_level(logging.WARNING, logger="orlojd.adapters.systemd"):
        assert notifier.watchdog() is False
        assert notifier.ready("x") is False
    events = [r.__dict__.get("event") for r in caplog.records]
    assert events == ["notify_failed", "notify_failed"]
    assert caplog.records[0].__dict__["notify_key"] == "WATCHDOG"


def test_socket_that_nobody_reads_any_more_logs_and_does_not_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    address = tmp_path / "closed.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(address))
    sock.close()  # the path stays, nobody listens: ECONNREFUSED
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(address)})
    with caplog.at_level(logging.WARNING, logger="orlojd.adapters.systemd"):
        assert notifier.stopping() is False
    assert [r.__dict__.get("event") for r in caplog.records] == ["notify_failed"]


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),
        ("500000", None, 0.25),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        (None, "self", None),
    ],
)
def test_watchdog_interval(usec: str | None, pid: str | None, expected: float | None) -> None:
    # Pids are resolved here, not at collection: xdist workers must collect identical ids.
    env = {} if usec is None else {"WATCHDOG_USEC": usec}
    if pid is not None:
        env["WATCHDOG_PID"] = str(os.getpid() if pid == "self" else os.getpid() + 1)
    assert Notifier.from_env(env).watchdog_interval == expected


def test_watchdog_interval_is_independent_of_the_socket(path_socket: tuple[socket.socket, str]) -> None:
    _, address = path_socket
    with_socket = Notifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"})
    assert with_socket.watchdog_interval == 15.0
    assert Notifier.from_env({"WATCHDOG_USEC": "30000000"}).enabled is False
