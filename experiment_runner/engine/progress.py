"""What a run is told (`RunOptions`) and what it reports while it goes (`Progress`).

Kept apart from the run loop (`run.py`) because the CLI's progress printer, the server's background
runs and batch jobs read and build them without needing the loop itself.
"""

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from experiment_runner.engine.cache import CacheUsage, cache_enabled
from experiment_runner.engine.llm import RetryPolicy


def on_signals(note: Callable[[], None]) -> None:
    """Make SIGINT/SIGTERM call `note` (in the main thread; elsewhere nothing changes). For the moments between
    anyio signal receivers: asyncio gives both signals back to their default when one closes, and SIGTERM's
    default is death, so a process between runs or ending one would die instead of stopping cleanly."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda _signum, _frame: note())


@dataclass(frozen=True)
class RunOptions:
    """How to run: concurrency K, whether to redo failed items, retry policy, Ctrl-C handling, who runs it."""

    concurrency: int = 8
    retry_failed: bool = False
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    handle_signals: bool = False  # the CLI sets it: first Ctrl-C drains, a second one stops at once
    grace_seconds: float = 5.0
    max_cost_usd: float | None = None  # this invocation's cap; None: what the experiment's stored budget has left
    runner: str = "cli"  # recorded on the experiment: a server resumes at startup only what a server ran
    tick_seconds: float | None = None  # also call on_progress this often, whether or not an item ended
    # False (`--no-cache`, env EXPERIMENT_RUNNER_NO_CACHE=1): every call samples again (and refreshes its cache entry)
    use_cache: bool = field(default_factory=cache_enabled)
    resume: bool = True  # run/resume/server: clear a stop and run; False (`worker`): leave a stopped experiment alone
    user_stop: bool = True  # a signal here is the user stopping the experiment (False: a `worker` leaving it runnable)
    on_signal: Callable[[], None] | None = None  # told of each SIGINT/SIGTERM the run receives (`run --workers`)
    retry_before: str | None = None  # with retry_failed: redo what failed before this stamp (default: the run's start)


@dataclass
class Progress:
    """Counts of this run, updated by the writer after each commit."""

    total: int
    completed: int = 0
    failed: int = 0
    evaluations_failed: int = 0
    started: float = field(default_factory=time.monotonic)
    interrupted: bool = False
    stopped_by: str | None = None  # a systematic failure that stopped the run: "host:port: reason"
    failure_reasons: Counter[str] = field(default_factory=Counter)  # item failures of this run, by message
    response_formats: dict[str, str] = field(default_factory=dict)  # {"target"|"evaluator": mode used}
    budget_reached: bool = False
    spent_usd: float = 0.0  # what this invocation's model calls cost (those litellm could price)
    budget_usd: float | None = None  # the experiment's stored budget (all its runs), or this run's own cap
    spent_before_usd: float = 0.0  # what the experiment's stored results had cost before this run
    max_reserved_usd: float = 0.0  # the dearest price the budget reserved for one item
    unpriced_calls: int = 0  # calls of this run litellm had no price for (their cost is unknown)
    retries: int = 0  # failed attempts that were tried again
    in_flight: int = 0  # items started and not yet ended
    stop_requested: bool = False  # a first Ctrl-C (or SIGTERM): no new item starts, those under way finish
    cache: CacheUsage = field(default_factory=CacheUsage)  # calls the response cache answered, and what they saved
    claimed: int = 0  # items this process claimed
    others_done: int = 0  # items of `total` that other workers finished meanwhile (set at the end)

    def note_later_signals(self, also: Callable[[], None] | None = None) -> None:
        """Once a run's signal receiver has closed, a signal during the run's last writes is noted as a stop
        request instead, and passed to `also` (`run --workers` forwards it to its worker processes)."""

        def note() -> None:
            self.stop_requested = True
            if also is not None:
                also()

        on_signals(note)

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def rate(self) -> float:
        """Items finished per second so far."""
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


ProgressCallback = Callable[[Progress], None]
