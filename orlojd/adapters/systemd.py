"""The sd_notify protocol, spoken directly (no libsystemd).

systemd passes a ``Type=notify`` service the address of its notification socket in
``NOTIFY_SOCKET``: a filesystem path (``/run/systemd/notify``) or, when it starts with
``@``, a name in the Linux abstract socket namespace. Each notification is one
``AF_UNIX``/``SOCK_DGRAM`` datagram of newline-separated ``KEY=VALUE`` lines. The
watchdog is armed by ``WatchdogSec=``: systemd then sets ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``, the process it expects the pings from) and kills the service when
``WATCHDOG=1`` does not arrive in time.

:class:`Notifier` is built from an environment mapping handed in by the caller
(``Notifier.from_env(os.environ)``), so tests and the daemon decide what it sees. Without
``NOTIFY_SOCKET`` (a plain shell, a test) every method does nothing. A failed send is
logged and never raised: losing a status line must not take the daemon down (a lost
``WATCHDOG=1`` is what the watchdog is there to notice).

Children (``git``) inherit ``NOTIFY_SOCKET`` unless the caller removes it from their
environment; the unit sets ``NotifyAccess=main`` so systemd ignores anything they send.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Notifier"]

log = logging.getLogger(__name__)

#: Seconds a single send may block (a full receive queue); then it is dropped and logged.
SEND_TIMEOUT = 2.0


def _socket_address(raw: str) -> str | None:
    """``NOTIFY_SOCKET`` as a Python ``AF_UNIX`` address; None when unset or unsupported."""
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]  # abstract namespace: a leading NUL byte instead of '@'
    if raw:
        # vsock:CID:PORT (systemd in a VM) and anything newer: not spoken here.
        log.warning(
            "NOTIFY_SOCKET %r is not a unix socket path; notifications disabled",
            raw,
            extra={"event": "notify_socket_unsupported"},
        )
    return None


def _positive_int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        return None
    return value if value > 0 else None


def _one_line(text: str) -> str:
    """A value may not contain a newline: it would start a new ``KEY=`` line."""
    return " ".join(text.splitlines())


@dataclass(frozen=True)
class Notifier:
    """Sends sd_notify datagrams to ``address``; every method is a no-op when it is None."""

    address: str | None = None
    watchdog_usec: int | None = None
    watchdog_pid: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from ``env``."""
        return cls(
            address=_socket_address(env.get("NOTIFY_SOCKET", "")),
            watchdog_usec=_positive_int(env.get("WATCHDOG_USEC")),
            watchdog_pid=_positive_int(env.get("WATCHDOG_PID")),
        )

    @property
    def enabled(self) -> bool:
        """True when there is a notification socket to send to."""
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC``, as systemd advises.

        None when the watchdog is off, or when ``WATCHDOG_PID`` names another process
        (the variables were inherited from a parent, or this is a forked child).
        """
        if self.watchdog_usec is None:
            return None
        if self.watchdog_pid is not None and self.watchdog_pid != os.getpid():
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def ready(self, status: str = "") -> bool:
        """Startup finished: ``READY=1`` (and ``STATUS=`` when given)."""
        return self._send("READY=1", status=status)

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status`` (an empty one clears it)."""
        return self._send(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Keep-alive ping: ``WATCHDOG=1``."""
        return self._send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        """Shutdown (drain) began: ``STOPPING=1``."""
        return self._send("STOPPING=1", status=status)

    def reloading(self, status: str = "") -> bool:
        """Reload began: ``RELOADING=1`` with ``MONOTONIC_USEC`` (systemd 253 needs both).

        Send :meth:`ready` when the reload is done; systemd waits for it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send("RELOADING=1", f"MONOTONIC_USEC={usec}", status=status)

    def _send(self, *lines: str, status: str = "") -> bool:
        """One datagram; True when it was handed to the kernel, False on no-op or failure."""
        if self.address is None:
            return False
        if status:
            lines = (*lines, f"STATUS={_one_line(status)}")
        payload = "\n".join(lines).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(payload, self.address)
        except OSError as error:  # includes TimeoutError, ENOENT, ECONNREFUSED
            log.warning(
                "sd_notify to %r failed: %s",
                self.address.replace("\0", "@", 1),
                error,
                extra={"event": "notify_failed", "notify_key": lines[0].split("=", 1)[0]},
            )
            return False
        return True
