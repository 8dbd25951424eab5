"""A store in PostgreSQL: the URL, the engines, and driver errors in words.

`--db postgresql://user:pass@host:port/db` (psycopg 3, the `[postgres]` extra) instead of a file. Writes are
plain READ COMMITTED transactions (row locks do what SQLite's `BEGIN IMMEDIATE` does: the lease locks its
experiment row); reads are REPEATABLE READ, so a read transaction sees one snapshot, as a WAL reader does.
A lock wait is bounded like SQLite's busy timeout (`lock_timeout`). No password is ever shown: the store is
named by `display(url)`, and an error by what it means (`cannot reach PostgreSQL at host:port: ...`).
"""

import re
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from experiment_runner import jsonlimits
from experiment_runner.errors import StoreError

CONNECT_TIMEOUT_S = 10
SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: str) -> bool:
    """Whether `--db` names a server (`scheme://...`) rather than a file."""
    return bool(_URL.match(location))


def parse_url(location: str) -> URL:
    """The SQLAlchemy URL (psycopg driver) of a `postgresql://` location; `StoreError` for any other scheme."""
    scheme = location.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise StoreError(f"unsupported store URL scheme {scheme!r}: give a file path or postgresql://user:password@host:port/database")
    try:
        url = make_url(location)
    except (ArgumentError, ValueError):
        raise StoreError("cannot read the store URL: expected postgresql://user:password@host:port/database") from None
    if not url.database:
        raise StoreError(f"the store URL {display(url)} names no database: postgresql://user:password@host:port/database")
    return url.set(drivername="postgresql+psycopg")


def display(url: URL) -> str:
    """The URL as shown to people: the password masked."""
    return url.set(drivername="postgresql").render_as_string(hide_password=True)


def shown(location: str) -> str:
    """How a `--db` value is shown: a URL with its password masked (whatever its scheme), a path as it is."""
    if not is_url(location):
        return location
    try:
        return make_url(location).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return location.split("://", 1)[0] + "://..."


def server(url: URL) -> str:
    """`host:port` of the server."""
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def make_engine(url: URL, *, reader: bool, lock_timeout_s: float) -> Engine:
    """An engine on the database; the reader's transactions are REPEATABLE READ snapshots.

    JSON columns come back as their text, as SQLite gives them, so every query's caller decodes the same way
    on both (`queries.common.decode_json`); the ORM's JSON columns decode it (`tables.StoredJSON`).
    """
    try:
        import psycopg  # noqa: F401  (the driver: an optional dependency)
    except ImportError:
        raise StoreError("a PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]>=3.1' (the package's [postgres] extra)") from None
    engine = create_engine(
        url,
        isolation_level="REPEATABLE READ" if reader else "READ COMMITTED",
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "options": f"-c lock_timeout={int(lock_timeout_s * 1000)}"},
        pool_pre_ping=True,
        json_serializer=jsonlimits.dumps,
    )

    @event.listens_for(engine, "connect")
    def _json_as_text(dbapi_conn: Any, _record: object) -> None:
        from psycopg.types.string import TextLoader

        for name in ("json", "jsonb"):
            dbapi_conn.adapters.register_loader(name, TextLoader)

    return engine


# (what PostgreSQL or libpq says, what the user reads), first match wins; {server}, {database}, {user} filled in.
_FAULTS = (
    ("connection refused", "cannot reach PostgreSQL at {server}: connection refused"),
    ("could not translate host name", "cannot reach PostgreSQL at {server}: unknown host"),
    ("name or service not known", "cannot reach PostgreSQL at {server}: unknown host"),
    ("timeout expired", "cannot reach PostgreSQL at {server}: no answer within the connect timeout"),
    ("no route to host", "cannot reach PostgreSQL at {server}: no route to host"),
    ("network is unreachable", "cannot reach PostgreSQL at {server}: network is unreachable"),
    ("no such file or directory", "cannot reach PostgreSQL at {server}: no server socket"),
    ("does not exist", None),  # database or role: told apart below
    ("password authentication failed", "PostgreSQL at {server} refused user {user!r}: password authentication failed"),
    ("no password supplied", "PostgreSQL at {server} wants a password for user {user!r}"),
    ("no pg_hba.conf entry", "PostgreSQL at {server} does not allow user {user!r} to connect from here (pg_hba.conf)"),
    ("too many clients", "PostgreSQL at {server} has too many connections open"),
    ("the database system is starting up", "PostgreSQL at {server} is starting up; try again"),
    ("the database system is shutting down", "PostgreSQL at {server} is shutting down"),
    ("server closed the connection", "lost the connection to PostgreSQL at {server}"),
    ("terminating connection", "lost the connection to PostgreSQL at {server}"),
    ("lock timeout", "database is locked by another process"),
    ("deadlock detected", "database deadlock with another process; try again"),
    ("could not serialize access", "database changed under this transaction by another process; try again"),
    ("no space left on device", "database is full"),
    ("could not extend file", "database is full"),
    ("read-only transaction", "database is read-only"),
    ("permission denied", "PostgreSQL at {server} denied user {user!r} access to the store's tables"),
)


def fault_words(exc: BaseException, url: URL) -> str:
    """A PostgreSQL or libpq error in words: never SQL text, parameters or the password."""
    reason = str(getattr(exc, "orig", None) or exc).strip()
    lowered = reason.lower()
    fill = {"server": server(url), "database": url.database, "user": url.username or ""}
    for said, words in _FAULTS:
        if said in lowered:
            if words is None:
                if "role" in lowered:
                    return "PostgreSQL at {server} has no user {user!r}".format(**fill)
                if "database" in lowered:
                    return "PostgreSQL at {server} has no database {database!r} (create it first: createdb {database})".format(**fill)
                continue
            return words.format(**fill)
    first = reason.splitlines()[0] if reason else type(exc).__name__
    first = re.sub(r"^\(psycopg[.\w]*\)\s*", "", first)
    return f"database error: {first}"
