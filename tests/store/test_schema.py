"""The schema is defined once: a store migrated by the Alembic revisions equals the SQLModel tables, on both dialects.

Alembic itself compares them (`compare_metadata`: tables, columns, types, nullability, server defaults,
indexes, unique and foreign keys); any difference fails the test, so a table changed without a revision (or a
revision that builds something else) cannot ship.
"""

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

from experiment_runner.errors import StoreError
from experiment_runner.store import migrations
from experiment_runner.store.database import open_store, schema_version


def differences(location: Path | str) -> list[object]:
    store = open_store(location)
    try:
        with store.reader.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn, opts=migrations.context_options()), SQLModel.metadata))
    finally:
        store.close()


def test_a_new_store_is_exactly_the_tables(db_path: Path | str) -> None:
    assert differences(db_path) == []
    store = open_store(db_path)
    assert schema_version(store) == migrations.version_of(migrations.head()) >= 7
    with store.read() as session:
        conn = session.connection()
        assert conn.execute(text("SELECT version FROM schema_migrations")).scalars().all() == [migrations.LEGACY_FENCE]
    store.close()


def test_the_comparison_sees_a_missing_index_and_a_missing_column(db_path: Path | str) -> None:
    """The check above can fail: a store that lacks what the tables have differs."""
    store = open_store(db_path)
    with store.write() as session:
        conn = session.connection()
        conn.execute(text("DROP INDEX ix_item_experiment_status"))
        conn.execute(text("DROP TABLE annotation"))
    store.close()
    found = differences(db_path)
    kinds = {entry[0] for entry in found if isinstance(entry, tuple)}
    assert {"add_index", "add_table"} <= kinds, found


def test_a_store_at_an_unknown_revision_is_refused(db_path: Path | str) -> None:
    open_store(db_path).close()
    store = open_store(db_path)
    with store.write() as session:
        session.connection().execute(text("UPDATE alembic_version SET version_num = '0999'"))
    store.close()
    with pytest.raises(StoreError, match=r"has schema version 999, newer than this release knows \(\d+\); upgrade experiment-runner"):
        open_store(db_path)


def test_target_version_builds_an_older_schema_that_later_opens_at_head(db_path: Path | str) -> None:
    old = open_store(db_path, target_version=2)
    assert schema_version(old) == 2
    with old.read() as session:
        columns = session.connection().execute(text("SELECT * FROM experiment")).keys()
    assert "api_base" in columns and "stop_reason" not in columns
    old.close()
    assert differences(db_path) == []


def test_three_processes_creating_one_store_at_once_build_it_once(db_path: Path | str) -> None:
    """The migration runs under a lock (BEGIN IMMEDIATE; an advisory lock on PostgreSQL): the others find it done."""
    import subprocess
    import sys

    script = "import sys; from experiment_runner.store import open_store; open_store(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(db_path)], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], errors
    assert differences(db_path) == []
    store = open_store(db_path)
    with store.read() as session:
        conn = session.connection()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [migrations.head()]
        assert conn.execute(text("SELECT version FROM schema_migrations")).scalars().all() == [migrations.LEGACY_FENCE]
    store.close()


def test_the_revision_files_are_alembic_s_revisions_and_a_store_at_head_opens_without_alembic(tmp_path) -> None:
    import subprocess
    import sys

    assert migrations.head() == migrations.script().get_current_head()
    assert set(migrations.shipped()) == {found.revision for found in migrations.script().walk_revisions()}
    open_store(tmp_path / "at-head.db").close()
    probe = ("import sys; from experiment_runner.store.database import open_store; "
             f"open_store({str(tmp_path / 'at-head.db')!r}).close(); print('alembic' in sys.modules)")
    opened = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert opened.stdout.strip() == "False"  # about 0.1 s of every command's start
