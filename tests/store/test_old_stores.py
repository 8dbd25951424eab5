"""Stores left by releases from before Alembic (schema versions 1..7, tests/data/stores) open with their data.

Each is stamped with the revision of its `schema_migrations` version and upgraded to head; its rows are all
there, and its schema equals the tables (what SQLite's reflection cannot read from the old hand-written DDL is
checked directly: see `old_sqlite_differences`).
"""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import String, inspect
from sqlmodel import SQLModel

from experiment_runner.errors import StoreError
from experiment_runner.store import migrations
from experiment_runner.store.database import open_store, schema_version

STORES = Path(__file__).resolve().parent.parent / "data" / "stores"
VERSIONS = range(1, 8)
pytestmark = pytest.mark.sqlite_only("stores from before Alembic are SQLite files")


def load(version: int, path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript((STORES / f"v{version}.sql").read_text(encoding="utf-8"))
    conn.close()
    return path


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def old_sqlite_differences(path: Path) -> list[object]:
    """Alembic's differences between the store and the tables, less three that the old DDL only seems to have.

    The hand-written DDL said `TEXT` (the tables say VARCHAR: the same type affinity in SQLite), `id TEXT PRIMARY
    KEY` without `NOT NULL`, and `REFERENCES t (id) ON DELETE CASCADE` inline, whose ON DELETE SQLAlchemy does
    not reflect; so every foreign key's ON DELETE is compared here from `PRAGMA foreign_key_list` instead.
    """
    store = open_store(path)
    try:
        with store.reader.connect() as conn:
            found = compare_metadata(MigrationContext.configure(conn, opts=migrations.context_options()), SQLModel.metadata)
            primary = {(t, c) for t in SQLModel.metadata.tables for c in inspect(conn).get_pk_constraint(t)["constrained_columns"]}
    finally:
        store.close()
    kept: list[object] = []
    for change in (change for entry in found for change in (entry if isinstance(entry, list) else [entry])):
        kind = change[0]
        if kind == "modify_type" and str(change[5]) == "TEXT" and isinstance(getattr(change[6], "impl", change[6]), String):
            continue
        if kind == "modify_nullable" and (change[2], change[3]) in primary and change[6] is False:
            continue
        if kind in ("remove_fk", "add_fk"):
            continue
        kept.append(change)
    conn2 = sqlite3.connect(path)
    for name, table in SQLModel.metadata.tables.items():
        stored = {(r[3], r[2], r[6]) for r in conn2.execute(f"PRAGMA foreign_key_list({name})")}
        wanted = {(fk.parent.name, fk.column.table.name, fk.ondelete or "NO ACTION") for fk in table.foreign_keys}
        if stored != wanted:
            kept.append(("foreign keys", name, sorted(stored), sorted(wanted)))
    conn2.close()
    return kept


def tables_of(path: Path) -> set[object]:
    return {name for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.mark.parametrize("version", VERSIONS)
def test_an_old_store_migrates_to_head_with_its_rows(version: int, tmp_path: Path) -> None:
    path = load(version, tmp_path / f"v{version}.db")
    before = {t: int(str(rows(path, f"SELECT count(*) FROM {t}")[0][0])) for (t,) in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    store = open_store(path)
    assert schema_version(store) == migrations.version_of(migrations.head())
    store.close()
    assert "worker" in tables_of(path) and "run_lease" not in tables_of(path)  # revision 0008: workers replace the run lease
    for table, count in before.items():
        if table == "run_lease":
            continue
        expected = count + 1 if table == "schema_migrations" and version < migrations.version_of(migrations.head()) else count
        assert rows(path, f"SELECT count(*) FROM {table}")[0][0] == expected, table
    assert rows(path, "SELECT id, type, experiment_id FROM conversation ORDER BY id") == [
        ("res-1", "result", "exp-1"), ("src-1", "source", None), ("src-2", "source", None)]  # v1..v3: backfilled by revision 0004
    assert rows(path, "SELECT id, position, status, result_conversation_id FROM item ORDER BY position") == [
        ("it-1", 0, "completed", "res-1"), ("it-2", 1, "pending", None)]
    assert rows(path, "SELECT label, text, start_offset, end_offset FROM annotation") == [("fact", "Spain", 12, 17)]
    api_base, stop_reason = rows(path, "SELECT api_base, stop_reason FROM experiment")[0]
    assert api_base == ("http://127.0.0.1:9/v1" if version >= 2 else None)
    assert stop_reason == ("interrupted" if version >= 5 else None)
    cached = rows(path, "SELECT cached_calls FROM evaluation")[0][0]
    assert cached == (1 if version >= 7 else 0)  # the server default fills a column added to existing rows
    assert old_sqlite_differences(path) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_an_old_store_reads_and_exports_through_the_product(version: int, tmp_path: Path) -> None:
    from experiment_runner.results.export import export_document

    path = load(version, tmp_path / f"v{version}.db")
    store = open_store(path)
    try:
        document = export_document(store, "exp-1")
    finally:
        store.close()
    items = {item["source_conversation"]["id"]: item for item in document["items"]}
    assert items["src-1"]["status"] == "completed" and items["src-2"]["status"] == "pending"
    result = items["src-1"]["result_conversation"]
    assert result is not None
    assert result["messages"][-1]["parts"] == [{"type": "text", "content": "Paris is in Spain"}]
    assert document["evaluations"]["m5"]["id"] == "ev-1"


def test_the_migrated_store_is_fenced_from_releases_before_alembic(tmp_path: Path) -> None:
    path = load(3, tmp_path / "v3.db")
    open_store(path).close()
    assert rows(path, "SELECT max(version) FROM schema_migrations") == [(migrations.LEGACY_FENCE,)]
    assert rows(path, "SELECT version_num FROM alembic_version") == [(migrations.head(),)]


def test_an_old_store_of_a_version_this_release_lacks_is_refused(tmp_path: Path) -> None:
    path = load(7, tmp_path / "v7.db")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'm099_future', 'x')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"has schema version 99, newer than this release knows \(\d+\); upgrade experiment-runner"):
        open_store(path)


def test_two_processes_opening_an_old_store_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = load(1, tmp_path / "v1.db")
    script = "import sys; from experiment_runner.store import open_store; open_store(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    assert rows(path, "SELECT version FROM schema_migrations ORDER BY version") == [(1,), (migrations.LEGACY_FENCE,)]
    assert rows(path, "SELECT version_num FROM alembic_version") == [(migrations.head(),)]
    assert old_sqlite_differences(path) == []


def test_a_batch_mode_table_rebuild_inside_a_migration_keeps_the_rows_that_refer_to_it(tmp_path: Path) -> None:
    """What a later revision may do on SQLite (`op.batch_alter_table`, which copies the table and drops the old
    one) does not cascade into the evaluations and annotations of the items: foreign keys are off inside."""
    from alembic.operations import Operations
    from sqlalchemy import Column

    path = load(7, tmp_path / "v7.db")
    store = open_store(path)
    with migrations.migration_transaction(store.writer) as conn, Operations.context(MigrationContext.configure(conn)):
        from alembic import op

        with op.batch_alter_table("item", recreate="always") as batch:
            batch.add_column(Column("rebuild_probe", String()))
    store.close()
    assert rows(path, "SELECT count(*) FROM evaluation") == [(1,)] and rows(path, "SELECT count(*) FROM annotation") == [(1,)]
    assert rows(path, "SELECT id, rebuild_probe FROM item ORDER BY position") == [("it-1", None), ("it-2", None)]
    assert rows(path, "PRAGMA foreign_key_check") == []
