"""A PostgreSQL store's errors in words (issue 23): server down, no such database or user, no store yet, a
scheme we do not speak; one `Error:` line, the right exit code, never SQL text or the password."""

import socket
import sys
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import query
from factories import RAGTRUTH

from experiment_runner.cli import cli


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _one_line(result: Result, exit_code: int, line: str) -> None:
    print(result.stderr.strip())
    assert result.exit_code == exit_code, result.output
    assert result.stderr == f"Error: {line}\n"
    for leak in ("secret", "SELECT", "psycopg.", "sqlalche.me", "Traceback"):
        assert leak not in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_server_that_is_down_is_one_line_without_the_password() -> None:
    port = _free_port()
    result = _cli("--db", f"postgresql://me:secret@127.0.0.1:{port}/runs", "list")
    _one_line(result, 2, f"cannot reach PostgreSQL at 127.0.0.1:{port}: connection refused")


def test_a_missing_database_or_user_is_named(pg_server: Any) -> None:
    base = f"127.0.0.1:{pg_server.port}"
    _one_line(_cli("--db", f"postgresql://postgres:secret@{base}/nope", "import", "x.jsonl"), 2,
              f"PostgreSQL at {base} has no database 'nope' (create it first: createdb nope)")
    _one_line(_cli("--db", f"postgresql://ghost:secret@{base}/postgres", "list"), 2, f"PostgreSQL at {base} has no user 'ghost'")


def test_a_reading_command_on_an_empty_database_creates_nothing(pg_database: str) -> None:
    _one_line(_cli("--db", pg_database, "list"), 2, f"no store at {pg_database}")
    assert query(pg_database, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") == [(0,)]
    assert _cli("--db", pg_database, "conversations").exit_code == 2


def test_other_url_schemes_are_refused() -> None:
    _one_line(_cli("--db", "mysql://me:secret@host/db", "list"), 2,
              "unsupported store URL scheme 'mysql': give a file path or postgresql://user:password@host:port/database")


def test_a_store_url_shows_without_its_password(pg_database: str) -> None:
    with_password = pg_database.replace("postgres@", "postgres:secret@")  # trust auth: the password is not checked
    shown = pg_database.replace("postgres@", "postgres:***@")
    assert _cli("--db", with_password, "list").stderr == f"Error: no store at {shown}\n"
    assert _cli("--db", with_password, "import", str(RAGTRUTH)).exit_code == 0
    _one_line(_cli("--db", with_password, "show", "ffffffff"), 2, f"no experiment with id 'ffffffff' in store {shown}")


def test_without_psycopg_the_error_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the [postgres] extra were not installed
    _one_line(_cli("--db", "postgresql://me:secret@127.0.0.1:5432/runs", "list"), 2,
              "a PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]>=3.1' (the package's [postgres] extra)")
