"""The only place that reads wall time. Everything else is handed ``now``."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """Current time in UTC (timezone-aware)."""
    return datetime.now(UTC)


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC, for storing and comparing; a naive time is refused (it has no instant)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: pass a timezone-aware UTC time")
    return moment.astimezone(UTC)
