"""`--batch` and `--detach`: running an experiment as provider batch jobs, waiting for them with progress."""

import sys
from typing import Any

import click

from experiment_runner.cli import Context
from experiment_runner.cli.caching import usage_line
from experiment_runner.results.documents import ExperimentSummary

batch_option = click.option(
    "--batch", is_flag=True,
    help="Send the requests as provider batch jobs (about half the price; answers within 24 h); `resume ID` collects them.",
)
detach_option = click.option(
    "--detach", is_flag=True, help="With batch jobs: submit what is due and exit; `experiment-runner resume ID` collects later.",
)


def check_batch_models(models: list[tuple[str | None, str]]) -> None:
    """Before anything is stored: every model the batch run calls can be batched by litellm (else exit 2)."""
    from experiment_runner.engine.batch_run import check_batchable

    check_batchable([(model, role) for model, role in models if model])


def refuse_budget(max_cost: float | None) -> None:
    """`--batch` with `--max-cost`: exit 2 before anything is stored (batch jobs cannot keep a budget)."""
    from experiment_runner.engine.batch_run import refuse_budget as refuse

    refuse(max_cost)


def uses_batches(obj: Context, experiment_id: str) -> bool:
    """Whether the experiment was started with `--batch` (then `resume` goes on with batch jobs)."""
    from experiment_runner.engine.batch_run import has_batches

    return has_batches(obj.store, experiment_id)


def execute_batches(obj: Context, experiment_id: str, *, detach: bool, retry_failed: bool = False, use_cache: bool = True) -> None:
    """Submit, wait (with progress on stderr) and collect; print the id last; exit 130 on Ctrl-C with jobs left."""
    from experiment_runner.engine.batch_run import BatchOptions, run_batches

    click.echo(f"Experiment {experiment_id}: batch jobs (collect them any time with: experiment-runner resume {experiment_id})", err=True)
    seen: dict[str, str] = {}

    def on_progress(progress: Any) -> None:
        for job in progress.open_jobs:
            if seen.get(job.batch_id) != job.status:
                seen[job.batch_id] = job.status
                click.echo(f"  {job.role} batch {job.batch_id} ({job.requests} requests): {job.status}", err=True)

    try:
        progress = run_batches(obj.store, experiment_id, BatchOptions(detach=detach, retry_failed=retry_failed, use_cache=use_cache), on_progress)
    except KeyboardInterrupt:
        click.echo(f"Interrupted; submitted batch jobs keep running at the provider. Collect them with: experiment-runner resume {experiment_id}", err=True)
        click.echo(experiment_id)
        sys.exit(130)
    for line in summary_lines(experiment_id, progress):
        click.echo(line, err=True)
    click.echo(experiment_id)


def summary_lines(experiment_id: str, progress: Any) -> list[str]:
    """What the batch invocation did, in a few lines."""
    lines = []
    if progress.batches_created:
        lines.append(f"Submitted {progress.batches_created} batch job(s) with {progress.submitted} request(s).")
    if progress.collected or progress.failed:
        lines.append(
            f"Collected {progress.collected} answer(s) ({progress.failed} failed request(s)) at ${progress.cost_usd:,.4f} batch price "
            f"(${progress.cost_unbatched_usd:,.4f} at the normal price)."
        )
    if progress.resubmitted:
        lines.append(f"{progress.resubmitted} request(s) of expired or cancelled jobs were submitted again.")
    if cached := usage_line(progress.cache.hits, progress.cache.saved_usd):
        lines.append(cached)
    if progress.detached:
        jobs = ", ".join(f"{j.role} {j.batch_id} ({j.status})" for j in progress.open_jobs)
        lines.append(f"Batch jobs still running at the provider: {jobs}. Collect with: experiment-runner resume {experiment_id}")
    else:
        lines.append(f"Experiment {experiment_id}: {progress.completed_items} item(s) completed, {progress.failed_items} failed in this invocation.")
    return lines


def show_lines(summary: ExperimentSummary) -> list[str]:
    """`show`'s lines on the experiment's batch jobs: each job's role, id, state and age."""
    jobs = summary.get("batches") or []
    if not jobs:
        return []
    lines = ["Batch jobs:"]
    for job in jobs:
        age = _age(job["age_seconds"])
        state = f"{job['status']}, collected" if job["collected_at"] else job["status"]
        error = f" ({job['error_message']})" if job.get("error_message") else ""
        lines.append(f"  {job['role']:<9} {job['batch_id']}  {state}{error}, {job['requests']} requests, submitted {age} ago")
    return lines


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
