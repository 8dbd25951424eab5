"""`run --workers N` (and `resume`, `reevaluate`): N local worker processes share one run (issue 23).

The command's own process prepares the run as `run` does (who runs it, the previous stop cleared, what is
left to do), starts N-1 `experiment-runner worker --experiment ID --as-run` processes and is the N-th
worker itself, `--concurrency` split among them. Each child prints its `Progress` as one JSON line on
stdout now and then and once at its end; `run_in_processes` adds them to its own and hands the sum to
`on_progress`, so the command prints what it prints for one process. Children run in their own process
group: a terminal's Ctrl-C reaches only this process, whose run passes each signal on (`on_signal`: the
first drains every child, the second stops them at once). A child that stops the run (its budget, a systematic failure) records the stop on
the experiment; the others then claim nothing more and end, and the run is resumable as with one process.
"""

import json
import logging
import os
import signal
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import TypedDict, cast

from experiment_runner.engine.cache import CacheUsage
from experiment_runner.engine.launch import Entry, WorkerProcess, can_fork, forks, start_worker
from experiment_runner.engine.llm import warm_call_path
from experiment_runner.engine.progress import Progress, ProgressCallback, RunOptions
from experiment_runner.engine.run import run_experiment
from experiment_runner.engine.runstate import budget_left, prepare_run
from experiment_runner.engine.workplan import count_left
from experiment_runner.errors import ExperimentRunnerError
from experiment_runner.store import Store
from experiment_runner.store.tables import Experiment
from experiment_runner.store.timeutil import now

log = logging.getLogger(__name__)

MANY_CALLS = 200  # from this many model calls on, a second process can pay for its start-up (litellm's import)
SUMMED = ("completed", "failed", "evaluations_failed", "spent_usd", "unpriced_calls", "retries", "in_flight", "claimed")


class CacheReport(TypedDict):
    hits: int
    saved_usd: float
    stored: int


class ProgressReport(TypedDict, total=False):
    """A worker process's progress as the JSON line it prints for the command (`report_of`, `combine`)."""

    completed: int
    failed: int
    evaluations_failed: int
    spent_usd: float
    unpriced_calls: int
    retries: int
    in_flight: int
    claimed: int
    stopped_by: str | None
    budget_reached: bool
    interrupted: bool
    stop_requested: bool
    max_reserved_usd: float
    response_formats: dict[str, str]
    failure_reasons: dict[str, int]
    cache: CacheReport


def default_workers(experiment: Experiment, items: int, forking: bool | None = None) -> int:
    """What is fastest here: a second process only for a CPU-bound run (at least `MANY_CALLS` model calls, not a
    pass-through) on a machine with two cores or more; where it would be a new interpreter (no fork), also only
    while a core is idle (the 1-minute load average below cores - 1). `forking`: whether workers would be forked
    (default: `launch.can_fork()` now).

    A run's CPU goes to litellm and the HTTP client, one core per process. A forked process starts with litellm
    loaded, so it pays for itself even on a busy machine (it gets its own share of the cores); a new interpreter
    imports litellm first (seconds of CPU), and on the shared 2-core machines measured (load average about 4) 2
    such processes were slower than 1 (benchmarks/README.md)."""
    calls = items * (1 + (experiment.evaluator_model is not None))
    if experiment.pass_through and experiment.evaluator_model is None or calls < MANY_CALLS or _cores() < 2:
        return 1
    if can_fork() if forking is None else forking:
        return 2
    spare = _cores() - os.getloadavg()[0]
    return 2 if spare >= 1 else 1


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def split(concurrency: int, workers: int) -> list[int]:
    """`concurrency` shared among at most `workers` processes, each at least 1 (fewer processes when K < N)."""
    count = max(1, min(workers, concurrency))
    return [concurrency // count + (i < concurrency % count) for i in range(count)]


def report_of(progress: Progress) -> ProgressReport:
    """A process's progress as the JSON object it reports to the command."""
    fields = {name: getattr(progress, name) for name in (*SUMMED, "stopped_by", "budget_reached", "interrupted",
                                                          "stop_requested", "max_reserved_usd", "response_formats")}
    return cast(ProgressReport, fields | {"failure_reasons": dict(progress.failure_reasons), "cache": asdict(progress.cache)})


def combine(reports: list[ProgressReport]) -> ProgressReport:
    """Several reports as one: counts added up, the first stop, any flag, the dearest reservation."""
    stopped_by = next((r["stopped_by"] for r in reports if r.get("stopped_by")), None)
    budget_reached = any(r.get("budget_reached") for r in reports)
    summed = {name: sum(cast(float, r.get(name, 0)) for r in reports) for name in SUMMED}
    return cast(ProgressReport, summed | {
        "stopped_by": stopped_by, "budget_reached": budget_reached,
        "interrupted": any(r.get("interrupted") for r in reports) and stopped_by is None and not budget_reached,
        "stop_requested": any(r.get("stop_requested") for r in reports),
        "max_reserved_usd": max([r.get("max_reserved_usd", 0.0) for r in reports] or [0.0]),
        "failure_reasons": dict(sum((Counter(r.get("failure_reasons", {})) for r in reports), Counter())),
        "cache": {k: sum(cast(dict[str, float], r.get("cache", {})).get(k, 0) for r in reports) for k in asdict(CacheUsage())},
        "response_formats": {k: v for r in reports for k, v in r.get("response_formats", {}).items()},
    })


def apply_report(progress: Progress, report: ProgressReport) -> None:
    """Set `progress` (the command's) from the combined report of its processes."""
    values = cast(dict[str, object], report)
    for name in SUMMED:
        setattr(progress, name, type(getattr(progress, name))(values[name]))
    for name in ("stopped_by", "budget_reached", "interrupted", "max_reserved_usd", "response_formats"):
        setattr(progress, name, values[name])
    progress.stop_requested = progress.stop_requested or report["stop_requested"]
    progress.failure_reasons = Counter(report["failure_reasons"])
    progress.cache = CacheUsage(**report["cache"])


@dataclass
class _Child:
    """One worker process, the last progress it reported and what it said on stderr."""

    process: WorkerProcess
    latest: ProgressReport = field(default_factory=lambda: ProgressReport())
    errors: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.latest = json.loads(line)
            except ValueError:
                log.info("worker %d: %s", self.process.pid, line.rstrip())
        self.process.wait()  # reaped as soon as it ends: a killed child's pid must look dead to the other workers

    def read_errors(self) -> None:
        assert self.process.stderr is not None
        self.errors.extend(line.rstrip() for line in self.process.stderr)

    def start_readers(self) -> None:
        self.readers = [threading.Thread(target=reader, daemon=True) for reader in (self.read, self.read_errors)]
        for thread in self.readers:
            thread.start()


def run_in_processes(
    store: Store, db: str, experiment_id: str, options: RunOptions, workers: int,
    on_progress: ProgressCallback | None = None, entry: Entry | None = None,
) -> Progress:
    """Run the experiment in `workers` processes on this machine, this one included; the summed progress, as
    `run_experiment`. The others are forked running `entry` (the CLI's `main`) where `launch.can_fork`: they have
    litellm loaded already; else new interpreters, which import it while this one's calls are under way."""
    experiment = prepare_run(store, experiment_id, options.runner)
    retry_before = now() if options.retry_failed else None
    budget = budget_left(store, experiment)
    command = Progress(total=count_left(store, experiment, retry_before), budget_usd=budget.cap_usd, spent_before_usd=budget.spent_usd)
    shares = split(options.concurrency, workers)
    if forks(entry):
        warm_call_path()  # once, here, rather than in each forked worker's first call
    store.release_connections()  # a forked child must not share one
    children = [_Child(start_worker(_worker_argv(experiment_id, k, retry_before, options.use_cache), entry, db))
                for k in shares[1:]]
    for child in children:  # only now: a fork must come before any thread starts
        child.start_readers()

    def report(local: Progress) -> None:
        apply_report(command, combine([report_of(local), *(child.latest for child in children if child.latest)]))
        command.stop_requested = command.stop_requested or local.stop_requested
        if on_progress is not None:
            on_progress(command)

    def forward() -> None:  # a signal here: the same for every child (the first drains, the second stops)
        for child in children:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGINT)

    local_options = replace(options, concurrency=shares[0], retry_before=retry_before, on_signal=forward)
    try:
        local = run_experiment(store, experiment_id, local_options, report)
    except BaseException:
        forward()  # this process failed: the others drain and stop too
        raise
    finally:
        for child in children:
            child.process.wait()
            for thread in child.readers:  # their last lines (the final report)
                thread.join(timeout=10)
    report(local)
    left = count_left(store, experiment, retry_before)
    command.others_done = max(0, command.total - left - command.done)
    for child in children:  # one that died (kill -9) is fine when the others took its items over
        code = child.process.wait()  # reaped already
        if code not in (0, 130) and not (left == 0 and code < 0):
            line = next((e for e in reversed(child.errors) if e.startswith("Error: ")), None)
            raise ExperimentRunnerError(line.removeprefix("Error: ") if line else
                                        f"a worker process ended unexpectedly (exit status {code})")
    return command


def _worker_argv(experiment_id: str, concurrency: int, retry_before: str | None, use_cache: bool) -> list[str]:
    """The command line of one worker process of `run --workers` (the store is passed beside it: `start_worker`)."""
    argv = ["worker", "--experiment", experiment_id, "--concurrency", str(concurrency), "--as-run"]
    if retry_before is not None:
        argv += ["--retry-failed-before", retry_before]
    return argv if use_cache else [*argv, "--no-cache"]
