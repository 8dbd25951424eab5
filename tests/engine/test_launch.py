"""How `run --workers` starts its worker processes (`engine.launch`): forked children seen as `Popen` sees them."""

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import pytest

from experiment_runner.engine.launch import ForkedProcess, can_fork, fork, start_worker
from experiment_runner.store import open_store

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers are forked on Linux only")


def _echo(argv: list[str]) -> NoReturn:
    print("out:", *argv)
    print("err:", os.getpgid(0) == os.getpid(), file=sys.stderr)  # the leader of its own process group
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(argv[0]))


def _raises(argv: list[str]) -> NoReturn:
    raise RuntimeError("a bug in the entry")


def _sleeps(argv: list[str]) -> NoReturn:
    print("ready", flush=True)
    time.sleep(60)
    os._exit(0)


def test_a_forked_worker_runs_the_entry_with_its_output_piped_back_and_its_exit_status() -> None:
    child = fork(["3", "worker"], _echo)
    assert isinstance(child, ForkedProcess) and child.pid != os.getpid()
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.read() == "out: 3 worker\n" and child.stderr.read() == "err: True\n"
    assert child.wait() == 3 and child.returncode == 3 and child.poll() == 3


def test_an_entry_that_returns_or_raises_never_runs_on_in_the_command_s_code() -> None:
    child = fork([], _raises)
    assert child.wait() == 70  # os._exit in the child's finally: nothing after `fork` ran twice


def test_a_signal_shows_as_a_negative_status_and_a_reaped_child_gets_no_more_signals() -> None:
    child = fork([], _sleeps)
    assert child.poll() is None and child.stdout is not None and child.stdout.readline() == "ready\n"
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    child.send_signal(signal.SIGTERM)  # reaped: its pid may belong to another process now; nothing is sent
    assert child.returncode == -signal.SIGKILL


def test_two_threads_waiting_for_one_child_both_get_its_status() -> None:
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # the command's handler is not the child's
    try:
        child = fork([], _sleeps)
    finally:
        signal.signal(signal.SIGTERM, previous)
    seen: list[int] = []
    waiter = threading.Thread(target=lambda: seen.append(child.wait()))
    waiter.start()
    assert child.stdout is not None and child.stdout.readline() == "ready\n"  # its own signal handling is set by now
    os.kill(child.pid, signal.SIGTERM)
    assert child.wait() == -signal.SIGTERM
    waiter.join(timeout=10)
    assert seen == [-signal.SIGTERM]


def test_with_a_thread_running_or_without_an_entry_a_new_interpreter_is_started() -> None:
    assert can_fork()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not can_fork()  # a fork now could copy a lock that thread holds
        spawned = start_worker(["--version"], _echo, "store.db")
    finally:
        stop.set()
        thread.join()
    assert not isinstance(spawned, ForkedProcess)
    assert spawned.stdout is not None and spawned.stdout.read().startswith("experiment-runner, version ")
    assert spawned.wait() == 0
    assert not isinstance(start_worker(["--version"], None, "store.db"), ForkedProcess)


def _proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_bytes().decode()


def test_a_spawned_worker_gets_the_store_in_its_environment_not_on_its_command_line(tmp_path: Path) -> None:
    secret = str(tmp_path / "s3cret-pw.db")  # as a PostgreSQL URL's password would be
    open_store(secret).close()
    spawned = start_worker(["worker", "--wait"], None, secret)  # waits for work until told to stop
    try:
        deadline = time.monotonic() + 10
        while "worker" not in _proc(spawned.pid, "cmdline") or not _proc(spawned.pid, "environ"):  # /proc fills in as it starts
            assert spawned.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        cmdline, environ = _proc(spawned.pid, "cmdline"), _proc(spawned.pid, "environ")
    finally:
        spawned.send_signal(signal.SIGKILL)  # (its exit is not what this test is about)
        spawned.wait()
    assert "s3cret-pw" not in cmdline and "--db" not in cmdline  # what `ps` shows everyone
    assert f"EXPERIMENT_RUNNER_DB={secret}" in environ.split("\0")  # readable only by its owner and root
