"""The only place that reads wall time. Everything else is handed ``now``."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """Current time in UTC (timezone-aware)."""
    return datetime.now(UTC)
