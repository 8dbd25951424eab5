"""Opening the store: a SQLite file (file checks, pragmas) or a PostgreSQL database, migrations, read/write sessions.

One `Store` per process and database. On SQLite (the default): Reads use plain (deferred) transactions; writes use
`BEGIN IMMEDIATE`, so a writer waits for the lock (busy timeout, env `EXPERIMENT_RUNNER_BUSY_TIMEOUT`
seconds) instead of failing half-way when the CLI and the server write to one file at once. WAL lets
readers go on while one of them writes, and opening a store that needs no migration only reads.

`Store.close` folds the WAL back into the database file when this process wrote (a TRUNCATE
checkpoint), so whenever no command is running the `.db` file alone is the whole store: it can be
copied or backed up without its `-wal` file.

A driver error under `read()`/`write()` becomes a `StoreFaultError` in words (`database is full`,
`database file is read-only`, `database is locked by another process`): never SQL text or parameters.
On PostgreSQL (`postgresql://...`, see `postgres.py`) there are no pragmas, WAL or checkpoints; its errors are
put in words there.
"""

import logging
import os
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlmodel import Session

from experiment_runner import jsonlimits
from experiment_runner.errors import StoreError, StoreFaultError
from experiment_runner.store import migrations, postgres

logger = logging.getLogger(__name__)

DEFAULT_DB = "experiments.db"
BUSY_TIMEOUT_S = 30.0
CHECKPOINT_TIMEOUT_MS = 2000  # at close, wait this long for other processes' writes and reads before leaving the WAL to them

# (what SQLite says, what the user reads), first match wins.
_FAULTS = (
    ("database or disk is full", "database is full"),
    ("readonly database", "database file is read-only"),
    ("read-only", "database file is read-only"),
    ("database is locked", "database is locked by another process"),
    ("database table is locked", "database is locked by another process"),
    ("unable to open database file", "database file cannot be opened"),
    ("disk i/o error", "disk I/O error"),
)


def busy_timeout() -> float:
    """Seconds a write waits for another process's lock (env `EXPERIMENT_RUNNER_BUSY_TIMEOUT`, default 30)."""
    raw = os.environ.get("EXPERIMENT_RUNNER_BUSY_TIMEOUT")
    try:
        return max(0.0, float(raw)) if raw else BUSY_TIMEOUT_S
    except ValueError:
        return BUSY_TIMEOUT_S


def fault_words(exc: BaseException) -> str:
    """A driver error in words: the message of one of `_FAULTS`, else SQLite's own short message."""
    reason = str(getattr(exc, "orig", None) or exc).strip()
    lowered = reason.lower()
    return next((words for said, words in _FAULTS if said in lowered), f"database error: {reason.splitlines()[0] if reason else type(exc).__name__}")


def _is_driver_error(exc: BaseException) -> bool:
    """A database driver's error (SQLAlchemy's wrapper, sqlite3's, or psycopg's when it is installed)."""
    if isinstance(exc, DatabaseError | OperationalError | sqlite3.Error):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error)


def _make_engine(path: Path, *, immediate: bool) -> Engine:
    timeout = busy_timeout()
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"check_same_thread": False, "timeout": timeout},
        # JSON columns hold strict JSON: a NaN or Infinity is written, and read back from older stores, as null
        json_serializer=jsonlimits.dumps,
        json_deserializer=jsonlimits.loads_stored,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun explicitly below
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: object) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")  # type: ignore[attr-defined]

    return engine


@dataclass
class Store:
    """An open, migrated store: a SQLite file (`path`) or a PostgreSQL database (`url`); `location` names it for people."""

    location: str
    reader: Engine
    writer: Engine
    path: Path | None = None
    url: URL | None = None
    wrote: bool = field(default=False, init=False)  # a write transaction began (migrations included)

    def __post_init__(self) -> None:
        event.listen(self.writer, "begin", self._mark_written)

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.writer.dialect.name

    def _mark_written(self, _conn: object) -> None:
        self.wrote = True

    def fault_words(self, exc: BaseException) -> str:
        """A driver error of this store in words (no SQL text, no password)."""
        return postgres.fault_words(exc, self.url) if self.url is not None else fault_words(exc)

    @contextmanager
    def _faults(self) -> Iterator[None]:
        """Turn driver errors raised inside into one `StoreFaultError` line naming the store."""
        try:
            yield
        except Exception as exc:
            if not _is_driver_error(exc):
                raise
            words = self.fault_words(exc)
            raise StoreFaultError(words if self.url is not None else f"{words} ({self.location})") from None

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries."""
        with self._faults(), Session(self.reader, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose work is one transaction: committed on success, rolled back on any error."""
        with self._faults(), Session(self.writer, expire_on_commit=False) as session, session.begin():
            yield session

    def close(self) -> None:
        """Release every connection; if this process wrote to a SQLite file, first checkpoint the WAL into it."""
        self.checkpoint_writes()
        self.release_connections()

    def release_connections(self) -> None:
        """Close the pooled connections (the next query opens one): before a fork, so no child shares one."""
        self.reader.dispose()
        self.writer.dispose()

    def checkpoint_writes(self) -> None:
        """If this process wrote since the last checkpoint, fold the WAL into the database file (see `checkpoint`)."""
        if self.wrote and self.path is not None:
            self.wrote = not self.checkpoint()

    def checkpoint(self) -> bool:
        """Copy every WAL frame into the database file and truncate the WAL (`wal_checkpoint(TRUNCATE)`).

        True when done (always on PostgreSQL, which has no WAL file to fold). Another process still writing or
        reading an older snapshot makes it give up after `CHECKPOINT_TIMEOUT_MS` (False): that process
        checkpoints when it ends. Never raises: the data is safe in the WAL either way.
        """
        if self.path is None:
            return True
        try:
            raw = self.writer.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute(f"PRAGMA busy_timeout={CHECKPOINT_TIMEOUT_MS}")
                busy = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout() * 1000)}")
                cursor.close()
            finally:
                raw.close()
        except (DatabaseError, OperationalError, sqlite3.Error) as exc:
            logger.info("could not checkpoint %s: %s", self.path, fault_words(exc))
            return False
        if busy:
            logger.info("checkpoint of %s left to the process still using it", self.path)
        return not busy


def open_store(location: str | Path, *, target_version: int | None = None, create: bool = True) -> Store:
    """Open the store at `location` (a file path or a `postgresql://` URL) and migrate it to `target_version` (default: latest).

    With `create=False` a store that does not exist yet (no file; an empty database) is `StoreError` `no store at ...`.
    """
    if isinstance(location, str) and postgres.is_url(location):
        return _open_postgres(postgres.parse_url(location), target_version, create)
    return _open_sqlite(Path(location), target_version, create)


def _open_sqlite(path: Path, target: int | None, create: bool) -> Store:
    if path.is_dir():
        raise StoreError(f"database path {path} is a directory, not a file")
    if not create and not path.exists():
        raise StoreError(f"no store at {path}")
    if not path.parent.exists():
        raise StoreError(f"cannot create database {path}: folder {path.parent} does not exist")
    try:
        store = Store(str(path), _make_engine(path, immediate=False), _make_engine(path, immediate=True), path=path)
        migrations.migrate(store.reader, store.writer, store.location, target)
    except (DatabaseError, OperationalError, sqlite3.DatabaseError) as exc:
        raise StoreError(f"cannot open database {path}: {fault_words(exc).removeprefix('database error: ')}") from None
    return store


def _open_postgres(url: URL, target: int | None, create: bool) -> Store:
    timeout = busy_timeout()
    reader = postgres.make_engine(url, reader=True, lock_timeout_s=timeout)
    writer = postgres.make_engine(url, reader=False, lock_timeout_s=timeout)
    store = Store(postgres.display(url), reader, writer, url=url)
    try:
        if not create and migrations.is_empty(reader):
            raise StoreError(f"no store at {store.location}")
        migrations.migrate(reader, writer, store.location, target)
    except Exception as exc:
        store.close()
        if isinstance(exc, StoreError):
            raise
        if not _is_driver_error(exc):
            raise
        raise StoreError(postgres.fault_words(exc, url)) from None
    return store


def schema_version(store: Store) -> int:
    """The schema version recorded in the store."""
    with store.reader.connect() as conn:
        return migrations.version_of(migrations.recorded_revision(conn))
