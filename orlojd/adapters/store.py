"""The state store on sqlmodel: SQLite (WAL) in the state folder by default, PostgreSQL by URL.

Migrations (alembic) run on open, skipped when the schema is already at head.
Operations are named by what they return (``inventory_digests_all``, ``applied_revision_one``,
``apply_run``). SQLAlchemy errors are re-raised as ``StoreError`` with the URL
(password hidden) and a next step.

The hot paths of an agent step (the gate's reads, the budget ledger, audit inserts) run
``adapters/sql.Sql`` statements on the connections these transactions hand out.
"""

from __future__ import annotations

import fcntl
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import and_, event, or_, text
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, create_engine, select

from orlojd.adapters.sql import Sql, fetch_all
from orlojd.adapters.tables import InventoryRow, MetaRow, ObjectStatusRow, ReconcileRow, SuspensionRow
from orlojd.core.conditions import Condition
from orlojd.core.keys import ResourceKey
from orlojd.errors import OrlojError

SCHEMA_HEAD = "0007"
MIGRATION_LOCK_KEY = 0x6F726C6F6A64  # "orlojd": one advisory lock key for schema upgrades
HISTORY_KEPT = 10


class StoreError(OrlojError):
    """The state database could not be opened or written."""


@dataclass(frozen=True, slots=True)
class StatusRecord:
    key: ResourceKey
    digest: str
    conditions: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Upsert:
    key: ResourceKey
    digest: str
    body: dict[str, Any]


def normalise_url(url: str) -> str:
    """postgresql:// URLs use psycopg 3; everything else passes through."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'state.db'}"


def stored_time(moment: datetime | str | None) -> datetime | None:
    """A timestamp read back, in UTC: SQLite returns naive UTC (as text from a raw or computed
    column), PostgreSQL aware in the session's zone."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


APPLIED_REVISION = Sql("SELECT value FROM store_meta WHERE key = 'applied_revision'")


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid url>"


class Store:
    """One database: open (and migrate) with ``Store.open(url)``."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url

    @classmethod
    def open(cls, url: str) -> Store:
        url = normalise_url(url)
        try:
            parsed = make_url(url)
        except Exception:
            raise StoreError(
                f"invalid database URL {url!r}", "use sqlite:///path/state.db or postgresql://user@host/db"
            ) from None
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        store = cls(engine, url)
        store.migrate()
        return store

    @contextmanager
    def errors(self, what: str = "state store") -> Iterator[None]:
        """Database and driver errors inside the block become one ``StoreError`` naming ``what``."""
        try:
            yield
        except (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise StoreError(
                f"{what} in {_safe(self.url)}: {type(exc).__name__}: {exc.args[0] if exc.args else exc}",
                "check that the database is reachable and writable",
            ) from None

    @contextmanager
    def writing(self, what: str = "state store") -> Iterator[Connection]:
        """One short write transaction, committed at the end; on SQLite it holds the write lock from its start."""
        with self.errors(what), self.engine.connect() as connection:
            if self.engine.dialect.name == "sqlite":
                connection.begin()  # SQLAlchemy's side of it (a no-op for the driver); the lock, on the cursor:
                cursor = connection.connection.cursor()
                cursor.execute("BEGIN IMMEDIATE")
                cursor.close()
            yield connection
            connection.commit()

    @contextmanager
    def reading(self, what: str = "state store") -> Iterator[Connection]:
        with self.errors(what), self.engine.connect() as connection:
            yield connection

    @contextmanager
    def _session(self) -> Iterator[Session]:
        try:
            with Session(self.engine) as session:
                yield session
        except SQLAlchemyError as exc:
            raise StoreError(
                f"state store {_safe(self.url)}: {type(exc).__name__}: {exc.args[0] if exc.args else exc}",
                "check that the database is reachable and writable",
            ) from None

    def _version(self) -> str | None:
        with self.engine.begin() as connection:
            try:
                return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except SQLAlchemyError:
                return None

    def migrate(self) -> None:
        """Bring the schema to head; a no-op (one query) when it is there already.

        Several processes may open a new store at once (a daemon and a CLI, two workers):
        the upgrade runs under a lock (a file lock beside SQLite, an advisory lock on
        PostgreSQL) and the version is read again once the lock is held.
        """
        try:
            if self._version() == SCHEMA_HEAD:
                return
            with self._migration_lock():
                if self._version() == SCHEMA_HEAD:
                    return
                from alembic import command
                from alembic.config import Config

                config = Config()
                with resources.as_file(resources.files("orlojd") / "migrations") as location:
                    config.set_main_option("script_location", str(location))
                    with self.engine.begin() as connection:
                        config.attributes["connection"] = connection
                        command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot open state store {_safe(self.url)}: {exc.args[0] if exc.args else exc}",
                "check the --db URL, that the server runs and that the folder is writable",
            ) from None

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
                connection.commit()
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                    connection.commit()
            return
        database = make_url(self.url).database
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate-lock", "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- reads -------------------------------------------------------------------------------

    def inventory_digests_all(self) -> dict[ResourceKey, str]:
        """Identity -> digest of every applied object, without bodies (the plan's fast path)."""
        table = InventoryRow.__table__  # type: ignore[attr-defined]
        with self._session() as session:
            rows = (
                session.connection()
                .execute(sa_select(table.c.kind, table.c.namespace, table.c.name, table.c.digest))
                .all()
            )
            return {ResourceKey(r[0], r[1], r[2]): r[3] for r in rows}

    def inventory_bodies_some(
        self, keys: Iterable[ResourceKey] = (), kinds: Iterable[str] = ()
    ) -> dict[ResourceKey, dict[str, Any]]:
        """Normalised bodies of the given objects and of every object of the given kinds."""
        table = InventoryRow.__table__  # type: ignore[attr-defined]
        wanted = set(keys)
        kind_list = sorted(set(kinds))
        out: dict[ResourceKey, dict[str, Any]] = {}
        with self._session() as session:
            connection = session.connection()
            columns = (table.c.kind, table.c.namespace, table.c.name, table.c.body)
            if kind_list:
                for r in connection.execute(sa_select(*columns).where(table.c.kind.in_(kind_list))):
                    out[ResourceKey(r[0], r[1], r[2])] = json.loads(r[3])
            remaining = sorted(k for k in wanted if k not in out)
            for start in range(0, len(remaining), 200):
                chunk = remaining[start : start + 200]
                for r in connection.execute(sa_select(*columns).where(_keys_match(table, chunk))):
                    out[ResourceKey(r[0], r[1], r[2])] = json.loads(r[3])
        return out

    def meta_all(self) -> dict[str, str]:
        """Store facts: ``applied_revision`` and ``inventory_fingerprint`` once something was applied."""
        with self._session() as session:
            return {row.key: row.value for row in session.exec(select(MetaRow)).all()}

    def applied_revision_one(self) -> str | None:
        """The applied revision: one row read (the gate asks before every call)."""
        with self.errors("reading the applied revision"), self.engine.connect() as connection:
            if self.engine.dialect.name == "postgresql":  # one statement: no BEGIN and ROLLBACK round trips
                connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            rows = fetch_all(connection, APPLIED_REVISION, {})
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def store_id_one(self) -> str:
        """This store's own random id, made on first use: the audit writer id of whoever drains it."""
        meta = MetaRow.__table__  # type: ignore[attr-defined]
        found = self.meta_all().get("store_id")
        if found:
            return found
        with self.writing("naming the store") as connection:
            found = connection.execute(sa_select(meta.c.value).where(meta.c.key == "store_id")).scalar()
            if found is None:
                found = uuid.uuid4().hex[:16]
                connection.execute(meta.insert(), [{"key": "store_id", "value": found}])
        return str(found)

    def status_all(self) -> list[StatusRecord]:
        with self._session() as session:
            inventory = {(r.kind, r.namespace, r.name): r.digest for r in session.exec(select(InventoryRow)).all()}
            rows = session.exec(select(ObjectStatusRow)).all()
            out = [
                StatusRecord(
                    ResourceKey(r.kind, r.namespace, r.name),
                    inventory.get((r.kind, r.namespace, r.name), ""),
                    json.loads(r.conditions),
                )
                for r in rows
                if (r.kind, r.namespace, r.name) in inventory
            ]
            return sorted(out, key=lambda s: s.key)

    def history_all(self) -> list[dict[str, Any]]:
        with self._session() as session:
            rows = session.exec(select(ReconcileRow).order_by(ReconcileRow.id.desc())).all()  # type: ignore[union-attr]
            return [
                {
                    "id": r.id,
                    "revision": r.revision,
                    "result": r.result,
                    "started_at": r.started_at.isoformat(),
                    "finished_at": r.finished_at.isoformat(),
                    "summary": json.loads(r.summary),
                }
                for r in rows
            ]

    # -- writes ------------------------------------------------------------------------------

    def apply_run(
        self,
        revision: str,
        upserts: Sequence[Upsert],
        deletes: Sequence[ResourceKey],
        conditions: dict[ResourceKey, list[Condition]],
        summary: dict[str, Any],
        started_at: datetime,
        now: datetime,
        fingerprint: str,
        history: bool = True,
    ) -> None:
        """Write one apply in one transaction: inventory, status, applied revision, history (and its
        audit event; ``history=False`` for ``orlojd state rebuild``, which restores those from the notes)."""
        inventory = InventoryRow.__table__  # type: ignore[attr-defined]
        status = ObjectStatusRow.__table__  # type: ignore[attr-defined]
        meta = MetaRow.__table__  # type: ignore[attr-defined]
        with self._session() as session:
            connection = session.connection()
            current = {
                ResourceKey(r[0], r[1], r[2]): (r[3], r[4])
                for r in connection.execute(
                    sa_select(
                        inventory.c.kind,
                        inventory.c.namespace,
                        inventory.c.name,
                        inventory.c.digest,
                        inventory.c.generation,
                    )
                )
            }
            touched = [item.key for item in upserts] + list(deletes)
            for start in range(0, len(touched), 200):
                chunk = touched[start : start + 200]
                for table in (inventory, status):
                    connection.execute(table.delete().where(_keys_match(table, chunk)))
            rows, statuses = [], []
            for item in upserts:
                old_digest, old_generation = current.get(item.key, (None, 0))
                generation = old_generation + (1 if old_digest != item.digest else 0)
                identity = {"kind": item.key.kind, "namespace": item.key.namespace, "name": item.key.name}
                rows.append(
                    {
                        **identity,
                        "digest": item.digest,
                        "applied_revision": revision,
                        "generation": generation,
                        "applied_at": now,
                        "body": json.dumps(item.body, sort_keys=True, separators=(",", ":")),
                    }
                )
                found = [{**c.as_json(), "observedGeneration": generation} for c in conditions.get(item.key, [])]
                statuses.append(
                    {
                        **identity,
                        "observed_generation": generation,
                        "last_applied_revision": revision,
                        "conditions": json.dumps(found),
                        "updated_at": now,
                    }
                )
            if rows:
                connection.execute(inventory.insert(), rows)
                connection.execute(status.insert(), statuses)
            connection.execute(meta.delete().where(meta.c.key.in_(["applied_revision", "inventory_fingerprint"])))
            connection.execute(
                meta.insert(),
                [
                    {"key": "applied_revision", "value": revision},
                    {"key": "inventory_fingerprint", "value": fingerprint},
                ],
            )
            if history:
                _record_history(connection, revision, "applied", summary, started_at, now)
            session.commit()

    def record_reconcile_run(
        self, revision: str, result: str, summary: dict[str, Any], started_at: datetime, now: datetime
    ) -> None:
        """A reconcile that applied nothing (stalled, superseded, refused): history only."""
        with self._session() as session:
            connection = session.connection()
            _record_history(connection, revision, result, summary, started_at, now)
            session.commit()

    def source_status_run(self, status: dict[str, Any]) -> None:
        """The daemon's view of its source (tip seen, conditions), for `orlojd status`."""
        meta = MetaRow.__table__  # type: ignore[attr-defined]
        with self._session() as session:
            connection = session.connection()
            connection.execute(meta.delete().where(meta.c.key == "source_status"))
            connection.execute(meta.insert(), [{"key": "source_status", "value": json.dumps(status, sort_keys=True)}])
            session.commit()

    def source_status_one(self) -> dict[str, Any] | None:
        raw = self.meta_all().get("source_status")
        return json.loads(raw) if raw else None

    def drifted_all(self) -> list[ResourceKey]:
        """Applied objects whose stored body no longer matches its digest (changed outside git)."""
        from orlojd.core.digest import digest_of

        table = InventoryRow.__table__  # type: ignore[attr-defined]
        with self._session() as session:
            rows = session.connection().execute(
                sa_select(table.c.kind, table.c.namespace, table.c.name, table.c.digest, table.c.body)
            )
            return [ResourceKey(r[0], r[1], r[2]) for r in rows if digest_of(json.loads(r[4])) != r[3]]

    def mark_drifted_run(self, keys: Sequence[ResourceKey]) -> None:
        """Make the plan see drifted objects as changed, so the next apply writes git's version back."""
        table = InventoryRow.__table__  # type: ignore[attr-defined]
        with self._session() as session:
            connection = session.connection()
            for start in range(0, len(keys), 200):
                chunk = keys[start : start + 200]
                connection.execute(table.update().where(_keys_match(table, chunk)).values(digest="sha256:drifted"))
            session.commit()

    def suspended_all(self) -> frozenset[ResourceKey]:
        with self._session() as session:
            rows = session.exec(select(SuspensionRow)).all()
            return frozenset(ResourceKey(r.kind, r.namespace, r.name) for r in rows)

    def suspend_run(self, key: ResourceKey, reason: str, now: datetime) -> bool:
        """Suspend ``key``; False when it already was."""
        with self._session() as session:
            if session.get(SuspensionRow, (key.kind, key.namespace, key.name)) is not None:
                return False
            session.add(SuspensionRow(kind=key.kind, namespace=key.namespace, name=key.name, reason=reason, since=now))
            session.commit()
            return True

    def resume_run(self, key: ResourceKey) -> bool:
        """Resume ``key``; False when it was not suspended."""
        with self._session() as session:
            row = session.get(SuspensionRow, (key.kind, key.namespace, key.name))
            if row is None:
                return False
            session.delete(row)
            session.commit()
            return True

    def close(self) -> None:
        self.engine.dispose()


RECONCILE_EVENTS = {"stalled": "failed"}  # history result -> audit event suffix (reconcile_applied, _failed, ...)


def _record_history(
    connection: Any, revision: str, result: str, summary: dict[str, Any], started_at: datetime, now: datetime
) -> None:
    """One reconcile-history row, then only the newest HISTORY_KEPT rows are kept."""
    history = ReconcileRow.__table__  # type: ignore[attr-defined]
    row = {
        "revision": revision,
        "started_at": started_at,
        "finished_at": now,
        "result": result,
        "summary": json.dumps(summary, sort_keys=True),
    }
    connection.execute(history.insert(), [row])
    from orlojd.adapters.audit import AuditEvent, insert  # audit reads the store: imported here, not at the top

    counts = {k: v for k, v in summary.items() if isinstance(v, int | float | str | bool)}
    insert(
        connection,
        AuditEvent(
            f"reconcile_{RECONCILE_EVENTS.get(result, result)}",
            now,
            revision=revision,
            detail=counts,
            actor="daemon",
            subject="repository",
        ),
    )
    newest = sa_select(history.c.id).order_by(history.c.id.desc()).limit(HISTORY_KEPT)
    keep = [r[0] for r in connection.execute(newest)]
    connection.execute(history.delete().where(history.c.id.not_in(keep)))


def _keys_match(table: Any, keys: Sequence[ResourceKey]) -> Any:
    return or_(*[and_(table.c.kind == k.kind, table.c.namespace == k.namespace, table.c.name == k.name) for k in keys])


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
