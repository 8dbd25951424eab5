"""Store faults in one line (issue 14): a full disk, a read-only file, a lock held past the busy timeout;
and readers that never wait for a writer."""

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import dump
from conftest import query as rows

from experiment_runner.cli import cli

pytestmark = pytest.mark.sqlite_only("SQLite's file faults (tmpfs, chattr, file locks); PostgreSQL's are tests/store/test_postgres_faults.py")


def _one_line(stderr: str, words: str) -> None:
    """The error is one `Error:` line in words: no SQL, parameters, library URL, group or traceback."""
    assert stderr.startswith("Error: ") and stderr.count("\n") == 1, stderr
    print(stderr.strip())
    assert words in stderr, stderr
    for leak in ("INSERT", "UPDATE", "SELECT", "sqlalche.me", "[parameters", "ExceptionGroup", "Traceback", "sqlite3."):
        assert leak not in stderr, stderr


def _conversations(path: Path, count: int, size: int) -> Path:
    lines = [json.dumps({"id": f"big-{i}", "messages": [{"role": "user", "content": f"q{i} " + "x" * size},
                                                        {"role": "assistant", "content": "a " + "y" * size}]}) for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (skipped where mounting is not allowed)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_mid_run_is_one_line_and_the_run_resumes(tiny_disk: Path, tmp_path: Path) -> None:
    db = tiny_disk / "store.db"
    source = _conversations(tmp_path / "big.jsonl", 30, 20_000)  # ~1.2 MB stored, ~1.2 MB more per run

    def invoke(*args: object) -> Result:
        return CliRunner().invoke(cli, ["--db", str(db), *map(str, args)], catch_exceptions=False)

    assert invoke("import", source).exit_code == 0
    filler = tiny_disk / "filler"
    free = shutil.disk_usage(tiny_disk).free
    filler.write_bytes(b"\0" * max(0, free - 300_000))  # room for the lease and a batch or two, not for the run
    result = invoke("run", "--name", "full", "--model", "openai/m", "--all", "--pass-through", "--concurrency", "2")
    assert result.exit_code == 1
    _one_line(result.stderr.split("\n", 1)[1], "database is full")  # after the "running" line
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    experiment_id = rows(db, "SELECT id FROM experiment")[0][0]
    assert 0 < rows(db, "SELECT count(*) FROM item WHERE status = 'completed'")[0][0] < 30  # the writer hit it mid-run
    assert rows(db, "SELECT count(*) FROM conversation WHERE type = 'source'") == [(30,)]
    filler.unlink()
    assert invoke("resume", experiment_id).exit_code == 0
    assert rows(db, "SELECT status, count(*) FROM item GROUP BY status") == [("completed", 30)]
    assert rows(db, "SELECT count(*) FROM conversation WHERE type = 'result'") == [(30,)]


def test_an_immutable_file_is_one_line_and_stays_as_it_was(db_path: Path, experiment_id: str, tmp_path: Path, run_cli) -> None:
    before = dump(db_path)
    if subprocess.run(["chattr", "+i", str(db_path)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        result = run_cli("import", _conversations(tmp_path / "more.jsonl", 2, 10))
        assert result.exit_code in (1, 2)
        _one_line(result.stderr, "database file is read-only")
    finally:
        subprocess.run(["chattr", "-i", str(db_path)], check=True)
    assert dump(db_path) == before


@pytest.fixture
def held_lock(db_path: Path, experiment_id: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sqlite3.Connection]:
    """Another process's write transaction, held open; our busy timeout is 0.3 s."""
    monkeypatch.setenv("EXPERIMENT_RUNNER_BUSY_TIMEOUT", "0.3")
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE experiment SET name = name || ' (being edited)'")
    yield other
    other.execute("ROLLBACK")
    other.close()


def test_a_lock_held_past_the_busy_timeout_is_one_line(held_lock: sqlite3.Connection, db_path: Path, tmp_path: Path, run_cli) -> None:
    result = run_cli("import", _conversations(tmp_path / "more.jsonl", 2, 10))
    assert result.exit_code == 1
    _one_line(result.stderr, "database is locked by another process")


def test_readers_do_not_wait_for_a_writer(held_lock: sqlite3.Connection, experiment_id: str, run_cli, tmp_path: Path) -> None:
    for args in (["list"], ["show", experiment_id], ["export", experiment_id, "--output", tmp_path / "e.json"], ["conversations"]):
        result = run_cli(*args)
        assert result.exit_code == 0, (args, result.stderr)
        assert "(being edited)" not in result.stdout  # they read the last committed state
    assert json.loads((tmp_path / "e.json").read_text())["experiment"]["id"] == experiment_id
