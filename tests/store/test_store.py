"""Opening the SQLite store: pragmas, migrations from older schemas (built with `target_version`), files that are not stores.

The schema's equality with the tables is tests/store/test_schema.py (both dialects); stores written by older
releases are tests/store/test_old_stores.py.
"""

import sqlite3
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from experiment_runner.errors import StoreError
from experiment_runner.store import migrations
from experiment_runner.store.database import open_store, schema_version
from experiment_runner.store.tables import Conversation  # noqa: F401  (registers the tables)

LATEST = migrations.version_of(migrations.head())
pytestmark = pytest.mark.sqlite_only("the SQLite file: pragmas, sqlite3 reads of older schemas")


def columns(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT IN ('schema_migrations', 'alembic_version')")]
    result = {t: sorted(r[1] for r in conn.execute(f"PRAGMA table_info({t})")) for t in tables}
    conn.close()
    return result


def test_new_store_has_latest_schema_matching_models(db_path: Path) -> None:
    store = open_store(db_path)
    assert schema_version(store) == LATEST
    expected = {name: sorted(c.name for c in table.columns) for name, table in SQLModel.metadata.tables.items()}
    assert columns(db_path) == expected
    with store.read() as session:
        conn = session.connection()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) > 0


def test_store_from_migration_1_opens_with_current_code(db_path: Path) -> None:
    old = open_store(db_path, target_version=1)
    assert schema_version(old) == 1
    assert "api_base" not in columns(db_path)["experiment"]
    with old.write() as session:
        conn = session.connection()
        conn.exec_driver_sql("INSERT INTO conversation VALUES ('c1', 'source', 'h', '2026-01-01T00:00:00.000000Z')")
        conn.exec_driver_sql(
            "INSERT INTO experiment (id, name, model, pass_through, conversation_ids, created_at) "
            "VALUES ('e1', 'old run', 'm', 0, '[\"c1\"]', '2026-01-01T00:00:00.000000Z')"
        )
    old.close()

    new = open_store(db_path)
    assert schema_version(new) == LATEST
    assert "evaluator_model" in columns(db_path)["experiment"]
    with new.read() as session:
        row = session.connection().exec_driver_sql("SELECT name, api_base FROM experiment").one()
    assert tuple(row) == ("old run", None)
    reopened = open_store(db_path)  # opening an up-to-date store changes nothing
    assert schema_version(reopened) == LATEST


def test_directory_and_garbage_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        open_store(tmp_path)
    garbage = tmp_path / "notes.txt"
    garbage.write_text("this is not a database, just some text " * 50)
    with pytest.raises(StoreError, match="cannot open database"):
        open_store(garbage)
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing" / "x.db")
    assert garbage.read_text().startswith("this is not a database")


def test_cli_reports_bad_db_paths_without_traceback(run_cli, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from experiment_runner.cli import cli

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\x00junk" * 100)
    for path in (tmp_path, garbage):
        result = CliRunner().invoke(cli, ["--db", str(path), "conversations"])
        assert result.exit_code == 2
        assert result.stderr.startswith("Error: ") and "Traceback" not in result.output


def test_store_from_migration_3_gets_leases_and_result_owners(db_path: Path) -> None:
    old = open_store(db_path, target_version=3)
    with old.write() as session:
        conn = session.connection()
        stamp = "2026-01-01T00:00:00.000000Z"
        conn.exec_driver_sql(f"INSERT INTO conversation VALUES ('c1', 'source', 'h', '{stamp}'), ('r1', 'result', 'h', '{stamp}')")
        conn.exec_driver_sql(f"INSERT INTO experiment (id, name, model, pass_through, conversation_ids, created_at) VALUES ('e1', 'x', 'm', 0, '[]', '{stamp}')")
        conn.exec_driver_sql(f"INSERT INTO item (id, experiment_id, position, source_conversation_id, result_conversation_id, created_at, updated_at)"
                             f" VALUES ('i1', 'e1', 0, 'c1', 'r1', '{stamp}', '{stamp}')")
    old.close()
    open_store(db_path).close()
    plain = sqlite3.connect(db_path)
    assert plain.execute("SELECT id, experiment_id FROM conversation ORDER BY id").fetchall() == [("c1", None), ("r1", "e1")]
    assert plain.execute("SELECT count(*) FROM worker").fetchall() == [(0,)]  # revision 0008: workers replace the run lease
    plain.close()
    assert "run_lease" not in columns(db_path)


def test_store_from_migration_4_gets_run_state_and_keeps_its_data(db_path: Path) -> None:
    from experiment_runner.engine.runstate import server_resumable

    old = open_store(db_path, target_version=4)
    stamp = "2026-01-01T00:00:00.000000Z"
    with old.write() as session:
        conn = session.connection()
        conn.exec_driver_sql(f"INSERT INTO conversation VALUES ('c1', 'source', 'h', '{stamp}', NULL), ('c2', 'source', 'h', '{stamp}', NULL)")
        conn.exec_driver_sql(f"INSERT INTO experiment (id, name, model, pass_through, conversation_ids, created_at, api_base) "
                             f"VALUES ('e1', 'old run', 'openai/t', 0, '[\"c1\", \"c2\"]', '{stamp}', 'http://127.0.0.1:9/v1')")
        conn.exec_driver_sql(f"INSERT INTO item (id, experiment_id, position, source_conversation_id, status, created_at, updated_at) "
                             f"VALUES ('i1', 'e1', 0, 'c1', 'completed', '{stamp}', '{stamp}'), ('i2', 'e1', 1, 'c2', 'in_progress', '{stamp}', '{stamp}')")
        conn.exec_driver_sql(f"INSERT INTO run_lease VALUES ('e1', 'o', 'elsewhere', 1, '{stamp}', 0)")
    old.close()
    assert "stop_reason" not in columns(db_path)["experiment"]

    new = open_store(db_path)
    assert schema_version(new) == LATEST
    plain = sqlite3.connect(db_path)
    row = plain.execute("SELECT name, api_base, stop_reason, stop_detail, stopped_at, runner, max_cost_usd, setting_changes FROM experiment").fetchone()
    assert row == ("old run", "http://127.0.0.1:9/v1", None, None, None, None, None, None)
    assert plain.execute("SELECT id, status FROM item ORDER BY position").fetchall() == [("i1", "completed"), ("i2", "in_progress")]
    plain.close()
    assert "run_lease" not in columns(db_path)  # an old runner's lease goes with its table (revision 0008)
    assert server_resumable(new) == []  # nobody knows who ran it: a server leaves it to `resume`
