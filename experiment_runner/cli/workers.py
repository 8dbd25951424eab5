"""`worker` and `--workers N`: several processes sharing runs (issue 23).

`worker` works on the store's unfinished experiments (or the one named) until none has work left; the
core is `engine.worker`. `--as-run` and `--retry-failed-before` are how `run --workers` starts its own
worker processes (hidden): each then prints its progress as JSON lines on stdout for the command.
"""

import json
import sys
import time

import anyio
import click

from experiment_runner.cli import Context, cli, main, option_for
from experiment_runner.cli.caching import no_cache_option
from experiment_runner.engine.experiments import get_experiment
from experiment_runner.engine.pool import ProgressReport, combine, default_workers, report_of, run_in_processes
from experiment_runner.engine.progress import Progress, ProgressCallback, RunOptions
from experiment_runner.engine.worker import WorkerOptions, work
from experiment_runner.engine.workplan import count_left
from experiment_runner.store import Store

workers_option = click.option(
    "--workers", type=click.IntRange(1, 64), envvar="EXPERIMENT_RUNNER_WORKERS",
    help="Worker processes on this machine sharing the run, --concurrency split among them (default: 2 for runs of "
         "200+ model calls on 2+ cores, else 1; env EXPERIMENT_RUNNER_WORKERS).",
)
REPORT_SECONDS = 0.25  # how often a worker of `run --workers` reports its progress to the command


@cli.command("worker")
@click.option("--experiment", "experiment_id", help="Work only on this experiment (an id or a unique prefix).")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=8, show_default=True,
              envvar="EXPERIMENT_RUNNER_CONCURRENCY", help="At most K model calls at once in this process.")
@click.option("--wait", is_flag=True, help="When no work is left, keep looking for new work until SIGTERM or Ctrl-C.")
@no_cache_option
@click.option("--as-run", is_flag=True, hidden=True, help="A process of `run --workers`: report progress as JSON lines.")
@click.option("--retry-failed-before", hidden=True, metavar="STAMP", help="Redo items that failed before STAMP (`resume --retry-failed`).")
@click.pass_obj
def worker_command(obj: Context, /, experiment_id: str | None, concurrency: int, wait: bool, no_cache: bool,
                   as_run: bool, retry_failed_before: str | None) -> None:
    """Work on the store's unfinished experiments, alongside any other workers, until none has work left.

    Each worker claims items a few at a time, so any number of them (on this machine or, with a shared
    PostgreSQL store, on others) share a run. Models, endpoints and budgets come from the store; API keys
    from this process's environment. Experiments stopped by a user, their budget or a failure wait for
    `resume`. SIGTERM or Ctrl-C: no new items, the calls under way finish, the rest is given back.

    \b
        experiment-runner worker --concurrency 16

    \b
        experiment-runner --db postgresql://runner:secret@db.internal/experiments worker --wait
    """
    store = obj.existing_store
    obj.field_names = stored_field_names
    options = WorkerOptions(
        experiment_id=obj.experiment_id(experiment_id) if experiment_id else None, concurrency=concurrency, wait=wait,
        use_cache=not no_cache, retry_before=retry_failed_before, as_run=as_run,
    )
    if as_run:
        reporter = _Reporter()
        anyio.run(work, store, options, reporter, reporter.done)
        click.echo(json.dumps(combine(reporter.finished)))
        return
    if wait:
        click.echo("worker: working on unfinished experiments; waiting for new work when none is left (Ctrl-C or SIGTERM stops)", err=True)
    outcome = anyio.run(work, store, options, None, _done_line)
    if not outcome.runs:
        click.echo("worker: no experiment has work left.", err=True)
    if outcome.signalled:
        click.echo("worker: stopped; what it had claimed and not finished is back for other workers.", err=True)


def stored_field_names(field: str) -> str:
    """How a worker's errors name inputs: it has no --model, only the experiment's stored settings."""
    stored = {"model": "its stored model", "evaluator_model": "its stored evaluator model"}
    if field in ("api_base", "evaluator_api_base"):
        return f"`experiment-runner resume ID {option_for(field)} URL`"
    return stored.get(field) or option_for(field)


def _done_line(experiment_id: str, progress: Progress) -> None:
    """What a worker says after its part of an experiment."""
    why = f"; stopped: {progress.stopped_by}" if progress.stopped_by else "; budget reached" if progress.budget_reached else ""
    click.echo(f"worker: experiment {experiment_id}: {progress.completed} completed, {progress.failed} failed here{why}", err=True)


class _Reporter:
    """A `run --workers` process's progress (all its runs of the experiment so far), one JSON line on stdout at
    most every `REPORT_SECONDS`; the command adds up its processes' last lines."""

    def __init__(self) -> None:
        self.last = 0.0
        self.finished: list[ProgressReport] = []

    def __call__(self, progress: Progress) -> None:
        if progress.stop_requested or time.monotonic() - self.last >= REPORT_SECONDS:
            self.last = time.monotonic()
            click.echo(json.dumps(combine([*self.finished, report_of(progress)])))
            sys.stdout.flush()

    def done(self, _experiment_id: str, progress: Progress) -> None:
        self.finished.append(report_of(progress))


def run_progress(obj: Context, experiment_id: str, options: RunOptions, workers: int | None, on_progress: ProgressCallback) -> Progress:
    """Run the experiment in this process, or in `workers` worker processes (default: what is fastest here)."""
    from experiment_runner.engine.run import run_experiment

    store: Store = obj.store
    if workers is None:
        experiment = get_experiment(store, experiment_id)
        workers = default_workers(experiment, count_left(store, experiment, None))
    if min(workers, options.concurrency) <= 1:
        return run_experiment(store, experiment_id, options, on_progress)
    return run_in_processes(store, obj.db, experiment_id, options, workers, on_progress, entry=main)  # what a forked worker runs
