"""Opening the SQLite store: file checks, pragmas, migrations, and read/write sessions.

One `Store` per process and database file. Reads use plain (deferred) transactions; writes use
`BEGIN IMMEDIATE`, so a writer waits for the lock (busy timeout, env `EXPERIMENT_RUNNER_BUSY_TIMEOUT`
seconds) instead of failing half-way when the CLI and the server write to one file at once. WAL lets
readers go on while one of them writes, and opening a store that needs no migration only reads.

`Store.close` folds the WAL back into the database file when this process wrote (a TRUNCATE
checkpoint), so whenever no command is running the `.db` file alone is the whole store: it can be
copied or backed up without its `-wal` file.

A driver error under `read()`/`write()` becomes a `StoreFaultError` in words (`database is full`,
`database file is read-only`, `database is locked by another process`): never SQL text or parameters.
"""

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlmodel import Session

from experiment_runner import jsonlimits
from experiment_runner.errors import StoreError, StoreFaultError
from experiment_runner.store import migrations
from experiment_runner.store.timeutil import now

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


@contextmanager
def _faults(path: Path) -> Iterator[None]:
    """Turn driver errors raised inside into one `StoreFaultError` line naming the file."""
    try:
        yield
    except (DatabaseError, OperationalError, sqlite3.Error) as exc:
        raise StoreFaultError(f"{fault_words(exc)} ({path})") from None


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
    """An open, migrated database file."""

    path: Path
    reader: Engine
    writer: Engine
    wrote: bool = field(default=False, init=False)  # a write transaction began (migrations included)

    def __post_init__(self) -> None:
        event.listen(self.writer, "begin", self._mark_written)

    def _mark_written(self, _conn: object) -> None:
        self.wrote = True

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries."""
        with _faults(self.path), Session(self.reader, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose work is one transaction: committed on success, rolled back on any error."""
        with _faults(self.path), Session(self.writer, expire_on_commit=False) as session, session.begin():
            yield session

    def close(self) -> None:
        """Release every connection; if this process wrote, first checkpoint the WAL into the database file."""
        self.checkpoint_writes()
        self.reader.dispose()
        self.writer.dispose()

    def checkpoint_writes(self) -> None:
        """If this process wrote since the last checkpoint, fold the WAL into the database file (see `checkpoint`)."""
        if self.wrote:
            self.wrote = not self.checkpoint()

    def checkpoint(self) -> bool:
        """Copy every WAL frame into the database file and truncate the WAL (`wal_checkpoint(TRUNCATE)`).

        True when done. Another process still writing or reading an older snapshot makes it give up after
        `CHECKPOINT_TIMEOUT_MS` (False): that process checkpoints when it ends. Never raises: the data is
        safe in the WAL either way.
        """
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


def open_store(path: str | Path, *, target_version: int | None = None) -> Store:
    """Open (creating if needed) the store at `path` and migrate it to `target_version` (default: latest)."""
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"database path {path} is a directory, not a file")
    if not path.parent.exists():
        raise StoreError(f"cannot create database {path}: folder {path.parent} does not exist")
    target = migrations.LATEST if target_version is None else target_version
    try:
        store = Store(path, _make_engine(path, immediate=False), _make_engine(path, immediate=True))
        _migrate(store, target)
    except (DatabaseError, OperationalError, sqlite3.DatabaseError) as exc:
        raise StoreError(f"cannot open database {path}: {fault_words(exc).removeprefix('database error: ')}") from None
    return store


def _migrate(store: Store, target: int) -> None:
    """Bring the schema to `target`; when nothing is due this only reads (no write lock, no wait)."""
    with store.reader.connect() as conn:
        version = migrations.recorded_version(conn)
    if version >= target and version <= migrations.LATEST:
        return
    if version > migrations.LATEST:
        raise StoreError(
            f"database {store.path} has schema version {version}, newer than this release knows "
            f"({migrations.LATEST}); upgrade experiment-runner"
        )
    for number in range(version + 1, target + 1):
        step = migrations.MIGRATIONS[number - 1]
        with store.writer.connect() as conn, conn.begin():
            if migrations.current_version(conn) >= number:  # another process got there first
                continue
            step(conn)
            conn.execute(
                text("INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :applied_at)"),
                {"version": number, "name": step.__name__, "applied_at": now()},
            )


def schema_version(store: Store) -> int:
    """The schema version recorded in the store."""
    with store.reader.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(max(version), 0) FROM schema_migrations")).scalar_one())
