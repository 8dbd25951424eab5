"""A throwaway PostgreSQL for the tests, and the `backend` every store-using test runs on.

`pg_server` (session): Debian's PostgreSQL 15 programs (`pg_config --bindir`: initdb, pg_ctl) start a cluster
in a temporary folder on a free port, trust auth, fsync off; as root they run as the `postgres` user (the
server refuses root). Each test that needs it gets its own database (`pg_database`), dropped after.

Tests under tests/store and tests/engine that use the store run on both backends (`backend` parametrized
`sqlite`/`postgres`, see `pytest_generate_tests`); elsewhere `backend` is `sqlite` unless a test asks for
`postgres` itself. Mark a test `sqlite_only` (with the reason) where it is about the SQLite file itself.

Where `pg_config` is missing the PostgreSQL tests skip, saying so; with `EXPERIMENT_RUNNER_REQUIRE_POSTGRES=1`
(CI) that is a failure instead, so nothing is silently skipped there.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BOTH_BACKENDS = ("tests/store/", "tests/engine/")
REQUIRE_ENV = "EXPERIMENT_RUNNER_REQUIRE_POSTGRES"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only(reason): the test is about the SQLite file; not run on PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Store and engine tests that use a store run once per backend."""
    if "backend" not in metafunc.fixturenames:
        return
    path = str(metafunc.definition.path).replace(os.sep, "/")
    if not any(part in path for part in BOTH_BACKENDS) or metafunc.definition.get_closest_marker("sqlite_only"):
        return
    if any(mark.name == "parametrize" and "backend" in str(mark.args[0]) for mark in metafunc.definition.iter_markers()):
        return
    metafunc.parametrize("backend", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """`sqlite` or `postgres`: which store this test runs on."""
    return str(getattr(request, "param", "sqlite"))


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"PostgreSQL is required ({REQUIRE_ENV}=1) but {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL: {reason}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Cluster:
    """One PostgreSQL cluster in a temporary folder."""

    def __init__(self) -> None:
        pg_config = shutil.which("pg_config")
        if pg_config is None:
            _unavailable("pg_config is not on PATH (install Debian's postgresql to run these tests)")
        self.bindir = Path(subprocess.run([str(pg_config), "--bindir"], check=True, capture_output=True, text=True).stdout.strip())
        self.folder = Path(tempfile.mkdtemp(prefix="er-pg-"))
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.folder, "postgres")
        self.port = _free_port()
        self.data = self.folder / "data"

    def _run(self, *args: str) -> None:
        command = (["runuser", "-u", "postgres", "--"] if self.as_postgres else []) + list(args)
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder)
        if done.returncode != 0:
            _unavailable(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def start(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-l", str(self.folder / "log"), "-o", options, "start")

    def stop(self) -> None:
        command = (["runuser", "-u", "postgres", "--"] if self.as_postgres else []) + [
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
        subprocess.run(command, capture_output=True, cwd=self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[_Cluster]:
    """The session's PostgreSQL cluster (started on first use)."""
    cluster = _Cluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _admin(cluster: _Cluster, sql: str) -> None:
    import psycopg

    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(sql)


def create_database(cluster: _Cluster, name: str) -> str:
    """A new, empty database on the cluster: its URL."""
    _admin(cluster, f"CREATE DATABASE {name}")
    return cluster.url(name)


def drop_database(cluster: _Cluster, name: str) -> None:
    _admin(cluster, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_database(pg_server: _Cluster) -> Iterator[str]:
    """A new, empty database of its own for this test: its URL (dropped after the test)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_server, name)
    try:
        yield url
    finally:
        drop_database(pg_server, name)


@pytest.fixture
def store_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """Where this test's store lives: a file in tmp_path (SQLite) or its own database's URL (PostgreSQL)."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_database"))
    return tmp_path / "store.db"
