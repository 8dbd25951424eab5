"""What a run shows while it runs and when it ends: progress lines, the Ctrl-C notice, the closing summary.

On a terminal, one self-overwriting line on stderr, redrawn as items end and every second. Without one
(CI, nohup, a log file), one plain line every `EXPERIMENT_RUNNER_PROGRESS_INTERVAL` seconds (default 10).
Both count retries. The first Ctrl-C is answered at once with how many items are still finishing.
"""

import logging
import math
import os
import time
from typing import Any

import click

from experiment_runner.cli.caching import usage_line
from experiment_runner.engine.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 10.0


def _plural(count: int, word: str, words: str | None = None) -> str:
    """`1 item`, `2 items`; `words` for an irregular plural."""
    return f"{count} {word}" if count == 1 else f"{count} {words or word + 's'}"


def interval_seconds() -> float:
    """Seconds between progress lines without a terminal: EXPERIMENT_RUNNER_PROGRESS_INTERVAL, default 10."""
    try:
        value = float(os.environ.get("EXPERIMENT_RUNNER_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if math.isfinite(value) and value > 0 else DEFAULT_INTERVAL


def progress_line(progress: Progress) -> str:
    """`12/40 done, 1 failed · 3.2 items/s, ETA 9s · 2 retries`."""
    eta = f", ETA {progress.eta_seconds:.0f}s" if progress.eta_seconds is not None else ""
    return (f"{progress.done}/{progress.total} done, {progress.failed} failed · {progress.rate:.1f} items/s{eta}"
            f" · {_plural(progress.retries, 'retry', 'retries')}")


class ProgressPrinter:
    """The `on_progress` callback of a CLI run: what to print, and when, on a terminal or not."""

    def __init__(self, terminal: bool, interval: float | None = None):
        self.terminal = terminal
        self.interval = interval_seconds() if interval is None else interval
        self.last_line = time.monotonic()
        self.told_stopping = False
        self.drawn = False

    @property
    def tick_seconds(self) -> float:
        """How often the run should call back even when no item ends."""
        return 1.0 if self.terminal else self.interval

    def __call__(self, progress: Progress) -> None:
        if progress.stop_requested and not self.told_stopping:
            self.told_stopping = True
            self._end_line()
            click.echo(f"stopping: finishing {_plural(progress.in_flight, 'call')} (Ctrl-C again to stop now)", err=True)
            return
        if self.terminal:
            click.echo(f"\r{progress_line(progress)}   ", err=True, nl=False)
            self.drawn = True
        elif time.monotonic() - self.last_line >= self.interval:
            self.last_line = time.monotonic()
            click.echo(f"progress: {progress_line(progress)}", err=True)

    def _end_line(self) -> None:
        """End the self-overwriting line, so what follows starts on a line of its own."""
        if self.drawn:
            click.echo("", err=True)
            self.drawn = False

    def finish(self) -> None:
        self._end_line()


def run_summary(experiment_id: str, progress: Progress, experiment: dict[str, Any] | None) -> list[str]:
    """The closing lines: what ran, the experiment's issue rate, this run's cost and retries, what to run next.

    `experiment` is the experiment's summary (`results.catalog.experiment_summary`) after the run."""
    if progress.total == 0:
        return [f"Experiment {experiment_id}: nothing left to run."]
    parts = [f"{progress.completed} completed", f"{progress.failed} failed"]
    if progress.evaluations_failed:
        parts.append(f"{progress.evaluations_failed} evaluation(s) failed")
    if progress.others_done:
        parts.append(f"{progress.others_done} done by other workers")
    if progress.total > progress.done + progress.others_done:
        parts.append(f"{progress.total - progress.done - progress.others_done} not finished")
    lines = [f"Experiment {experiment_id}: {_plural(progress.total, 'item')} run: " + ", ".join(parts) + "."]
    facts = []
    if experiment is not None and experiment.get("evaluations_received"):
        rate, evaluated = experiment["metrics"]["issue_rate"], experiment["evaluations_received"]
        facts.append(f"issue rate {rate * 100:.1f}% of {_plural(evaluated, 'evaluated reply', 'evaluated replies')}")
    facts.append(f"this run cost {run_cost(progress)}")
    facts.append(_plural(progress.retries, "retry", "retries"))
    lines.append("  " + "; ".join(facts))
    if cached := usage_line(progress.cache.hits, progress.cache.saved_usd):
        lines.append("  " + cached)
    lines.append(f"  next: experiment-runner show {experiment_id}   experiment-runner report {experiment_id}")
    return lines


def run_cost(progress: Progress) -> str:
    """This run's cost, or `unknown` when a call had no price (never a $0 that is not one)."""
    if progress.unpriced_calls:
        known = f"; ${progress.spent_usd:.4f} for the priced ones" if progress.spent_usd else ""
        return f"unknown (no price for {_plural(progress.unpriced_calls, 'call')}{known})"
    return f"${progress.spent_usd:.4f}"


def budget_message(experiment_id: str, progress: Progress) -> str:
    """The error line of a run the budget stopped."""
    cap = f"${progress.budget_usd:g}" if progress.budget_usd is not None else "the budget"
    spent = progress.spent_before_usd + progress.spent_usd  # the budget is the experiment's: earlier runs count
    return (f"budget of {cap} reached after {_plural(progress.done, 'item')} (${spent:.4f} spent); "
            f"to go on: experiment-runner resume {experiment_id} --max-cost AMOUNT")
