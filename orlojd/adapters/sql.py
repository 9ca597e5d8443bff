"""Plain SQL for the hot paths of an agent step, run in a SQLAlchemy connection's transaction.

The gate's reads, the budget ledger and audit inserts run a few statements per model or tool
call. ``Sql`` holds one such statement with ``:name`` placeholders, rendered once (at import)
for SQLite (``?``) and psycopg (``%(name)s``); ``fetch_all`` / ``execute_one`` run it on the DBAPI
cursor of a SQLAlchemy ``Connection``, inside that connection's transaction (begun on
SQLAlchemy's side first, so ``connection.commit()`` commits it). That skips SQLAlchemy's
statement building and compile-cache lookups, most of a step's cost otherwise; the
transactions, locks and commits are the same ones. Timestamps go to SQLite as SQLAlchemy
stores them (``sqlite_time``), so rows written either way compare alike; read back, they are
what the driver returns (``store.stored_time`` turns them into aware UTC datetimes).
Driver errors propagate as they are; ``Store.errors`` (which wraps every transaction) turns
them into ``StoreError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

__all__ = ["Sql", "execute_one", "fetch_all", "sqlite_time"]

_PLACEHOLDER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class Sql:
    """One hot-path statement with ``:name`` placeholders, rendered for SQLite (``?``) and psycopg
    (``%(name)s``) once, when the module that owns it is imported."""

    text: str
    qmark: str = ""
    names: tuple[str, ...] = ()
    pyformat: str = ""

    def __post_init__(self) -> None:
        names = tuple(_PLACEHOLDER.findall(self.text))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "qmark", _PLACEHOLDER.sub("?", self.text))
        object.__setattr__(self, "pyformat", _PLACEHOLDER.sub(r"%(\1)s", self.text.replace("%", "%%")))


def sqlite_time(moment: datetime) -> str:
    """A timestamp as SQLAlchemy stores it in SQLite: naive UTC text with microseconds (so text
    comparisons order it, and rows written either way compare alike)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return f"{moment:%Y-%m-%d %H:%M:%S.%f}"


def _cursor(connection: Connection, statement: Sql, values: Mapping[str, Any]) -> Any:
    if not connection.in_transaction():
        connection.begin()  # so that ``connection.commit()`` commits what the raw cursor wrote
    cursor = connection.connection.cursor()
    if connection.dialect.name == "sqlite":
        cursor.execute(
            statement.qmark,
            [sqlite_time(v) if isinstance(v, datetime) else v for v in (values[n] for n in statement.names)],
        )
    else:
        cursor.execute(statement.pyformat, values)
    return cursor


def fetch_all(connection: Connection, statement: Sql, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Run ``statement`` in ``connection``'s transaction; its rows (timestamps as stored: see ``stored_time``)."""
    cursor = _cursor(connection, statement, values)
    try:
        return list(cursor.fetchall())
    finally:
        cursor.close()


def execute_one(connection: Connection, statement: Sql, values: Mapping[str, Any]) -> int:
    """Run a write ``statement`` in ``connection``'s transaction; the rows it touched."""
    cursor = _cursor(connection, statement, values)
    try:
        return int(cursor.rowcount)
    finally:
        cursor.close()
