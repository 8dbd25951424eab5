"""Shared fixtures: an isolated environment, a real SQLite store in tmp_path, a CLI runner."""

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


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's database, API keys or retry waits."""
    monkeypatch.setenv("EXPERIMENT_RUNNER_DB", str(tmp_path / "default.db"))
    monkeypatch.setenv("EXPERIMENT_RUNNER_RETRY_BASE_DELAY", "0")
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "EXPERIMENT_RUNNER_API_KEY", "EXPERIMENT_RUNNER_DEBUG"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


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


def query(db_path: Path, sql: str, *args: object) -> list[tuple]:
    """Rows of one SQL query against the store file, read with plain sqlite3."""
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def dump(db_path: Path) -> list[str]:
    """Every row of every table (schema included), to show a store did not change."""
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


@pytest.fixture
def experiment_id(db_path: Path) -> str:
    """A finished experiment built through the engine's writer, in the test's store (a module may define its own)."""
    store = open_store(db_path)
    try:
        return build_finished(store)
    finally:
        store.close()
