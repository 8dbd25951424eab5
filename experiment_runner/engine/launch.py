"""How `run --workers N` starts its N-1 worker processes: a fork where it is safe, else a new interpreter.

A new interpreter (`python -m experiment_runner ... worker --as-run`) imports litellm again before its first
call: 2-3 s of CPU, as long as all the calls of a 400-item run with a judge, so a second process barely paid
for itself (benchmarks/README.md, issue 23). On Linux the command forks instead: litellm is already loaded
(the preflight imported it) and the child shares those pages, so its first call goes out within milliseconds.

Fork is safe here because the command forks before it starts any thread or event loop (else it spawns, see
`can_fork`) and after its store has closed its connections (`Store.release_connections`): a child never
uses the parent's SQLite or PostgreSQL connection, it opens the store again. The child runs the same
command line as a spawned worker through `entry` (the CLI's `main`, which ends with `os._exit`), in its own
process group, its stdout and stderr piped to the command as a spawned worker's are.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Protocol, TypeGuard

log = logging.getLogger(__name__)

Entry = Callable[[list[str]], object]  # runs a command line in this process and never returns (`cli.main`)


class WorkerProcess(Protocol):
    """What the command needs of a worker process: a `subprocess.Popen` or a `ForkedProcess`."""

    @property
    def pid(self) -> int: ...
    @property
    def stdout(self) -> IO[str] | None: ...
    @property
    def stderr(self) -> IO[str] | None: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def send_signal(self, sig: int) -> None: ...


class ForkedProcess:
    """A forked child as `subprocess.Popen` shows one: its pipes, `poll`, `wait`, `send_signal`, and `returncode`
    (negative: the signal that killed it). Reaped once, under a lock, whichever thread asks first."""

    def __init__(self, pid: int, stdout: IO[str], stderr: IO[str]) -> None:
        self.pid, self.stdout, self.stderr = pid, stdout, stderr
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        if self.returncode is None and self._lock.acquire(blocking=False):
            try:
                self._reap(os.WNOHANG)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self) -> int:
        with self._lock:
            self._reap(0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # never a pid that was reaped (and may have been reused)
            os.kill(self.pid, sig)

    def _reap(self, flags: int) -> None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, flags)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)


def can_fork() -> bool:
    """Fork only on Linux (macOS's system libraries are not fork-safe) and only while this process has one thread."""
    return sys.platform == "linux" and threading.active_count() == 1


def forks(entry: Entry | None) -> TypeGuard[Entry]:
    """Whether `start_worker` with this `entry` forks (else it starts a new interpreter)."""
    return entry is not None and can_fork()


def start_worker(argv: list[str], entry: Entry | None, db: str) -> WorkerProcess:
    """Start `experiment-runner --db DB ARGV` as a worker process: forked running `entry` where `can_fork`, else
    spawned. A spawned worker gets the store in its environment (EXPERIMENT_RUNNER_DB), not on its command line,
    where `ps` would show anyone on the machine a PostgreSQL URL's password."""
    if forks(entry):
        return fork(["--db", db, *argv], entry)
    # its own process group: a terminal's Ctrl-C reaches only the command, which passes each signal on once
    return subprocess.Popen([sys.executable, "-m", "experiment_runner", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, process_group=0, env={**os.environ, "EXPERIMENT_RUNNER_DB": db})


def _default_signals() -> None:
    """A child starts with the signal handling a new interpreter has, not the command's (its handlers may note a stop)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def fork(argv: list[str], entry: Entry) -> ForkedProcess:
    """Fork; the child runs `entry(argv)` with its stdout and stderr on pipes to this process, in its own group."""
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    sys.stdout.flush()  # what this process has buffered is printed once, by this process
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the command's frames
        try:
            os.setpgid(0, 0)
            _default_signals()
            os.dup2(out_write, 1)
            os.dup2(err_write, 2)
            for fd in (out_read, out_write, err_read, err_write):
                os.close(fd)
            # the pipes, whatever `sys.stdout`/`sys.stderr` were in the command (a test's capture, say)
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115  (lives as long as the child)
            sys.stderr = open(2, "w", encoding="utf-8", closefd=False, errors="backslashreplace")  # noqa: SIM115
            entry(argv)
        finally:
            os._exit(70)  # only if `entry` returned or raised
    os.close(out_write)
    os.close(err_write)
    log.info("forked worker process %d", pid)
    return ForkedProcess(pid, os.fdopen(out_read, "r"), os.fdopen(err_read, "r"))
