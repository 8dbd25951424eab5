"""Where the CLI looks for the store (issue 20, items 3, 8 and 13): `--db` before or after the command, no
store created by a command that only reads, errors that name the store, id prefixes, and a `.db` file
that is the whole store once a command has ended."""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from conftest import dump, finished, query
from factories import RAGTRUTH, RAGTRUTH_GOLD, wait_until_serving

from experiment_runner.cli import cli

SAMPLE_LINES = RAGTRUTH.read_text(encoding="utf-8").splitlines()


def invoke(*args: object) -> tuple[int, str, str]:
    """The CLI with exactly these arguments (no `--db` added): exit code, stdout, stderr."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_db_is_taken_after_the_command_as_well_as_before(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    experiment_id = finished(db)
    code, out, err = invoke("list", "--db", db)
    assert code == 0, err
    assert out.splitlines()[2].startswith(experiment_id)
    assert invoke("show", experiment_id, "--db", db)[0] == 0
    assert invoke("export", "--db", db, experiment_id)[0] == 0
    # after the command wins over before it (and over the environment)
    other = tmp_path / "other.db"
    finished(other)
    code, out, err = invoke("--db", other, "list", "--json", "--db", db)
    assert code == 0, err
    assert [e["id"] for e in json.loads(out)["items"]] == [experiment_id]
    # every command takes it
    for name in ("import", "conversations", "run", "resume", "reevaluate", "list", "show", "export", "delete", "score", "report", "compare", "serve", "demo"):
        assert "--db PATH" in invoke(name, "--help")[1], name


READ_ONLY = [
    ["list"], ["list", "--json"], ["conversations"], ["show", "abcd1234"], ["export", "abcd1234"],
    ["export", "abcd1234", "-o", "out.json"], ["report", "abcd1234"], ["compare", "abcd1234", "dcba4321"],
    ["score", "abcd1234", "--gold", str(RAGTRUTH_GOLD)], ["delete", "abcd1234"], ["resume", "abcd1234"],
    ["reevaluate", "abcd1234", "--evaluator-model", "openai/gpt-4o"],
    ["run", "--name", "n", "--model", "openai/gpt-4o-mini", "--all", "--dry-run"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a[:1] + a[2:3]))
def test_a_command_that_reads_never_creates_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "typo.db"
    for argv in (["--db", missing, *args], [*args, "--db", missing]):
        code, out, err = invoke(*argv)
        assert (code, out, err) == (2, "", f"Error: no store at {missing}\n")
    assert sorted(os.listdir(tmp_path)) == []  # no store, no -wal/-shm, no output file


def test_not_found_names_the_store(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    finished(db)
    code, _, err = invoke("show", "0b9d4c1e-1f1e-4c55-9b0e-2f8de3a1c7aa", "--db", db)
    assert (code, err) == (2, f"Error: no experiment with id '0b9d4c1e-1f1e-4c55-9b0e-2f8de3a1c7aa' in store {db}\n")
    code, _, err = invoke("--db", db, "run", "--name", "n", "--model", "openai/gpt-4o-mini", "--conversation", "nope", "--dry-run")
    assert code == 2 and "nope" in err and err.startswith("Error: ")


def rename_experiment(db: Path, old: str, new: str) -> None:
    """Give an experiment another id (so two share a prefix), its rows following."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA foreign_keys=OFF")
        with conn:
            for sql in ("UPDATE experiment SET id = ? WHERE id = ?", "UPDATE item SET experiment_id = ? WHERE experiment_id = ?",
                        "UPDATE conversation SET experiment_id = ? WHERE experiment_id = ?"):
                conn.execute(sql, (new, old))
    finally:
        conn.close()


def test_unique_id_prefixes_resolve_for_every_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "x.db"
    first, second = finished(db), finished(db)
    rename_experiment(db, first, "98861fbe-0000-4000-8000-000000000001")
    rename_experiment(db, second, "98862abc-0000-4000-8000-000000000002")
    a, b = "98861fbe-0000-4000-8000-000000000001", "98862abc-0000-4000-8000-000000000002"
    code, out, err = invoke("--db", db, "show", "98861fbe")  # the prefix the report's file name uses
    assert code == 0, err
    assert f"  id               {a}" in out
    assert json.loads(invoke("--db", db, "export", "98862")[1])["experiment"]["id"] == b
    code, out, _ = invoke("--db", db, "compare", "98861", "98862", "--json")
    assert code == 0 and (json.loads(out)["a"]["id"], json.loads(out)["b"]["id"]) == (a, b)
    assert json.loads(invoke("--db", db, "score", "98861f", "--gold", RAGTRUTH_GOLD, "--json")[1])["experiment_id"] == a
    code, out, err = invoke("--db", db, "report", "98861fbe")
    assert code == 0, err
    assert out.strip() == "report-98861fbe.html" and (tmp_path / "report-98861fbe.html").is_file()
    code, _, err = invoke("--db", db, "resume", "98862a")  # resolved, then refused for its own reasons, not "no experiment"
    assert "no experiment" not in err and "ambiguous" not in err

    code, out, err = invoke("--db", db, "show", "9886")
    assert (code, out) == (2, "")
    assert err == f"Error: experiment id prefix '9886' is ambiguous: {a}, {b} all start with it; give more characters\n"
    code, _, err = invoke("--db", db, "show", "988")  # shorter than 4: only a whole id, and the error says so
    assert (code, err) == (2, "Error: experiment id prefix '988' is too short: give at least 4 characters of the id\n")
    before = dump(db)
    assert invoke("--db", db, "delete", "98")[0] == 2 and dump(db) == before
    code, out, err = invoke("--db", db, "delete", "98861")
    assert code == 0, err
    assert out.startswith(f"Deleted experiment {a} (pass-through ☔): 6 item(s), 5 evaluation(s)")
    assert query(db, "SELECT id FROM experiment") == [(b,)]


def test_help_texts(tmp_path: Path) -> None:
    out = invoke("run", "--help")[1]
    assert "--input FILE" in out and "--input TEXT" not in out
    lines = [line.strip() for line in out.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith("experiment-runner run --name")]
    assert len(starts) == 2 and starts[1] == starts[0] + 1  # two examples, one a line, not one paragraph
    assert "-o, --output FILE" in invoke("export", "--help")[1]


def cli_process(db: Path, *args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "experiment_runner", "--db", str(db), *map(str, args)],
                          capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def copy_db_alone(db: Path, folder: Path) -> Path:
    """What a user backing up "the SQLite file of the store" gets: the .db file, without -wal or -shm."""
    folder.mkdir()
    return Path(shutil.copy(db, folder / db.name))


def contents(db: Path) -> list[tuple]:
    return query(db, "SELECT (SELECT count(*) FROM conversation), (SELECT count(*) FROM message), (SELECT count(*) FROM experiment), "
                     "(SELECT group_concat(status) FROM (SELECT status FROM item ORDER BY position)), (SELECT completed_at IS NOT NULL FROM experiment)")


def test_after_a_command_the_db_file_alone_is_the_whole_store(tmp_path: Path) -> None:
    db = tmp_path / "experiments.db"
    assert cli_process(db, "import", RAGTRUTH).returncode == 0
    run = cli_process(db, "run", "--name", "copy", "--model", "openai/gpt-4o-mini", "--all", "--pass-through")
    assert run.returncode == 0, run.stderr
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    copy = copy_db_alone(db, tmp_path / "backup")
    (conversations, messages, experiments, statuses, completed), = contents(copy)
    assert (conversations, experiments, statuses, completed) == (80, 1, ",".join(["completed"] * 40), 1) and messages > 80
    assert contents(copy) == contents(db)
    # a command that only read leaves it so
    assert cli_process(copy, "list").returncode == 0
    assert contents(copy_db_alone(copy, tmp_path / "again")) == contents(db)


def test_the_wal_is_checkpointed_even_while_another_process_keeps_the_store_open(tmp_path: Path) -> None:
    """Closing is not enough when another connection (an idle `serve`, a reader) is open: SQLite folds the WAL
    back only when the last connection closes. The command's TRUNCATE checkpoint does it anyway."""
    db = tmp_path / "experiments.db"
    assert cli_process(db, "import", RAGTRUTH).returncode == 0
    idle = sqlite3.connect(db)  # another process's connection, between two reads
    try:
        idle.execute("SELECT count(*) FROM conversation").fetchall()
        assert cli_process(db, "run", "--name", "copy", "--model", "openai/gpt-4o-mini", "--all", "--pass-through").returncode == 0
        assert Path(f"{db}-wal").stat().st_size == 0
        copy = copy_db_alone(db, tmp_path / "backup")
        assert query(copy, "SELECT count(*), min(status) FROM item") == [(40, "completed")]
    finally:
        idle.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_when_serve_stops_the_db_file_alone_is_the_whole_store(tmp_path: Path, stop: signal.Signals) -> None:
    """Ctrl-C, or the SIGTERM a service manager sends (uvicorn re-raises it after shutting down, so the
    process ends before the CLI's own close): either way the lifespan has checkpointed the WAL."""
    db, port = tmp_path / "served.db", free_port()
    env = {k: v for k, v in os.environ.items() if k != "EXPERIMENT_RUNNER_TOKEN"}
    server = subprocess.Popen([sys.executable, "-m", "experiment_runner", "--db", str(db), "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_until_serving(server, f"http://127.0.0.1:{port}/v1/experiments")
        body = [json.loads(line) for line in SAMPLE_LINES[:5]]
        assert httpx.post(f"http://127.0.0.1:{port}/v1/conversations", json=body, timeout=30).status_code == 201
        assert Path(f"{db}-wal").stat().st_size > 0  # while it runs, the rows are in the WAL
    finally:
        server.send_signal(stop)
        try:
            server.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode in (0, -signal.SIGTERM)
    copy = copy_db_alone(db, tmp_path / "backup")
    assert query(copy, "SELECT count(*) FROM conversation") == [(5,)]
