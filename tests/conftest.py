"""Shared fixtures: an isolated environment, a real store (a SQLite file in tmp_path, or a PostgreSQL database: see
postgres_server.py), a CLI runner."""

import importlib.util
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import experiment_runner  # noqa: F401  (sets litellm's offline environment before anything imports it)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _use_checkout_fixtures() -> None:
    """Load `experiment_runner.fixtures` from this checkout's fixtures/ folder, not from wherever an editable install points."""
    spec = importlib.util.spec_from_file_location("experiment_runner.fixtures", FIXTURES / "__init__.py", submodule_search_locations=[str(FIXTURES)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["experiment_runner.fixtures"] = module
    spec.loader.exec_module(module)


_use_checkout_fixtures()

from factories import build_finished  # noqa: E402

from experiment_runner.cli import cli  # noqa: E402
from experiment_runner.fixtures.fakellm import FakeLLM  # noqa: E402
from experiment_runner.store import Store, open_store  # noqa: E402

pytest_plugins = ["postgres_server"]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's database, API keys or retry waits."""
    monkeypatch.setenv("EXPERIMENT_RUNNER_DB", str(tmp_path / "default.db"))
    monkeypatch.setenv("EXPERIMENT_RUNNER_RETRY_BASE_DELAY", "0")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "EXPERIMENT_RUNNER_API_KEY", "EXPERIMENT_RUNNER_DEBUG"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def db_path(store_location: Path | str) -> Path:
    """The test's store: a file path on SQLite; on PostgreSQL (`backend` postgres) its URL, a str."""
    return store_location  # type: ignore[return-value]


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    opened = open_store(db_path)
    yield opened
    opened.close()


@pytest.fixture
def run_cli(db_path: Path) -> Callable[..., Result]:
    """Run the CLI in process against `db_path`: `run_cli("import", file, input=...)`."""

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--db", str(db_path), *map(str, args)], input=input, catch_exceptions=False)

    return invoke


def location(db: Path | str | Store) -> Path | str:
    """A store's file path or URL (password included: the tests' own server)."""
    if isinstance(db, Store):
        if db.url is not None:
            return db.url.set(drivername="postgresql").render_as_string(hide_password=False)
        assert db.path is not None
        return db.path
    return db


def is_postgres(db: Path | str | Store) -> bool:
    found = location(db)
    return isinstance(found, str) and found.startswith("postgresql://")


def store_exists(db: Path | str | Store) -> bool:
    """Whether a store was created there: the file exists (SQLite), the schema does (PostgreSQL)."""
    if is_postgres(db):
        return bool(query(db, "SELECT 1 FROM information_schema.tables WHERE table_name = 'alembic_version'"))
    return Path(location(db)).exists()


def has_table(db: Path | str | Store, name: str) -> bool:
    """Whether the store has the table `name` (on either backend)."""
    if is_postgres(db):
        return bool(query(db, "SELECT 1 FROM information_schema.tables WHERE table_name = ?", name))
    return store_exists(db) and bool(query(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name))


def query(db_path: Path | str | Store, sql: str, *args: object) -> list[tuple]:
    """Rows of one SQL query (`?` placeholders) against the store, read with the plain driver (sqlite3 or psycopg)."""
    db_path = location(db_path)
    if isinstance(db_path, str) and db_path.startswith("postgresql://"):
        import psycopg
        from psycopg.types.string import TextLoader

        with psycopg.connect(db_path, autocommit=True) as pg:
            for name in ("json", "jsonb"):  # JSON columns as text, as sqlite3 gives them
                pg.adapters.register_loader(name, TextLoader)
            cursor = pg.execute(sql.replace("%", "%%").replace("?", "%s"), args) if args else pg.execute(sql)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def dump(db_path: Path | str | Store) -> list[str]:
    """Every row of every table (schema included on SQLite), to show a store did not change."""
    db_path = location(db_path)
    if isinstance(db_path, str) and db_path.startswith("postgresql://"):
        tables = [row[0] for row in query(db_path, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
        return [f"{table}: {row!r}" for table in tables for row in sorted(map(repr, query(db_path, f'SELECT * FROM "{table}"')))]
    conn = sqlite3.connect(db_path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    """The bundled OpenAI-compatible server on a free port; script it with `fake_llm.configure(...)`."""
    with FakeLLM() as server:
        yield server


def finished(db: Path | str) -> str:
    """A finished experiment built through the engine's writer in the store at `db`; its id."""
    store = open_store(db)
    try:
        return build_finished(store)
    finally:
        store.close()


@pytest.fixture
def experiment_id(db_path: Path) -> str:
    """A finished experiment in the test's store (a module may define its own)."""
    return finished(db_path)
