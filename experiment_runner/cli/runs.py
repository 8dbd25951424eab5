"""`run`, `resume` and `reevaluate`: creating and running experiments."""

import sys
from typing import Any

import click

from experiment_runner.cli import Context, cli
from experiment_runner.cli.batching import batch_option, check_batch_models, detach_option, execute_batches, uses_batches
from experiment_runner.cli.caching import no_cache_option, usage_line
from experiment_runner.cli.conversations import import_summary
from experiment_runner.cli.estimates import show_estimate
from experiment_runner.engine.estimate import called_models, check_priced, dry_run, dry_run_reevaluation
from experiment_runner.engine.evaluate import DEFAULT_MAX_TOKENS
from experiment_runner.engine.experiments import EFFORTS, ExperimentSpec, create_experiment, create_reevaluation
from experiment_runner.engine.output_schema import check_fields
from experiment_runner.engine.run import Progress, RunOptions, run_experiment
from experiment_runner.engine.structured import SETTINGS
from experiment_runner.errors import BadInputError, ExperimentRunnerError, RunStoppedError
from experiment_runner.evaluation.evaluator import load_labels
from experiment_runner.files import read_json_file
from experiment_runner.ingest.conversations import source_conversation_ids
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import Store

concurrency_option = click.option(
    "--concurrency", type=click.IntRange(1, 1000), default=8, show_default=True,
    envvar="EXPERIMENT_RUNNER_CONCURRENCY", help="At most K model calls at once (env EXPERIMENT_RUNNER_CONCURRENCY).",
)
FORMAT_HELP = "auto tries json_schema, then json_object (+schema), then json_object, then the prompt alone, and keeps what the server accepts."
evaluator_options = [
    click.option("--evaluator-api-base", envvar="EXPERIMENT_RUNNER_EVALUATOR_API_BASE", help="OpenAI-compatible URL for the evaluator model."),
    click.option("--labels", "labels_file", type=click.Path(dir_okay=False), help='Labels JSON: {"labels": [{"name", "description"}], "domain_context"?}.'),
    click.option("--evaluator-response-format", type=click.Choice(SETTINGS), default="auto", show_default=True,
                 envvar="EXPERIMENT_RUNNER_EVALUATOR_RESPONSE_FORMAT", help="Structured output for the evaluator: " + FORMAT_HELP),
    click.option("--evaluator-max-tokens", type=click.IntRange(1), envvar="EXPERIMENT_RUNNER_EVALUATOR_MAX_TOKENS",
                 help=f"Cap on each evaluator reply (default {DEFAULT_MAX_TOKENS}; lower it for small local context windows)."),
]


budget_options = [
    click.option("--max-cost", type=float, envvar="EXPERIMENT_RUNNER_MAX_COST",
                 help="Stop starting items before this run's model calls pass USD (calls under way finish; the rest stay pending)."),
    click.option("--max-cost-unpriced-ok", is_flag=True, help="Allow --max-cost when a model has no known price (its calls count as $0)."),
]
dry_run_options = [
    click.option("--dry-run", is_flag=True, help="Check everything and print the estimated calls, tokens and cost; store and call nothing."),
    click.option("--json", "as_json", is_flag=True, help="With --dry-run: the estimate as JSON."),
]


def with_options(options: list[Any]) -> Any:
    def decorate(function: Any) -> Any:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


@cli.command("run")
@click.option("--name", required=True, help="Experiment name, 1 to 255 characters.")
@click.option("--model", required=True, help="Target model, a litellm model string (openai/gpt-4o-mini, ollama/llama3, ...).")
@click.option("--conversation", "conversation_ids", multiple=True, help="A conversation id to include (repeatable).")
@click.option("--all", "all_conversations", is_flag=True, help="Include every imported conversation.")
@click.option("--input", "inputs", multiple=True, help="Import FILE (any import format, OTLP traces too) and run on exactly its conversations (repeatable).")
@click.option("--pass-through", is_flag=True, help="Copy the existing final replies instead of calling the target model.")
@click.option("--system-prompt", help="Replace (or add) the system message in every replayed conversation.")
@click.option("--reasoning-effort", type=click.Choice(EFFORTS), help="Reasoning effort passed to the target model.")
@click.option("--output-schema", "output_schema_file", type=click.Path(dir_okay=False), help="JSON list of {name, type, is_list, is_optional}: the reply must be that JSON.")
@click.option("--api-base", envvar="EXPERIMENT_RUNNER_API_BASE", help="OpenAI-compatible URL for the target model (a local Ollama/vLLM server).")
@click.option("--response-format", type=click.Choice(SETTINGS), default="auto", show_default=True,
              envvar="EXPERIMENT_RUNNER_RESPONSE_FORMAT", help="Structured output for --output-schema: " + FORMAT_HELP)
@click.option("--evaluator-model", envvar="EXPERIMENT_RUNNER_EVALUATOR_MODEL", help="Evaluator model; without it replies are not evaluated.")
@with_options(evaluator_options)
@concurrency_option
@no_cache_option
@batch_option
@detach_option
@with_options(budget_options + dry_run_options)
@click.pass_obj
def run_command(obj: Context, **opts: Any) -> None:
    """Create an experiment over imported conversations and run it to the end.

    Prints progress on stderr (on a terminal) and the experiment id as the last line on stdout.
    Ctrl-C stops cleanly (exit 130); `resume` continues.

        experiment-runner run --name baseline --model openai/gpt-4o-mini --all --evaluator-model openai/gpt-4o
        experiment-runner run --name replay --model openai/gpt-4o-mini --input traces.otlp.jsonl
    """
    if opts["inputs"] and (opts["conversation_ids"] or opts["all_conversations"]):
        raise BadInputError("give either --input FILE (repeatable) or --conversation/--all, not both")
    if opts["conversation_ids"] and opts["all_conversations"]:
        raise BadInputError("give either --conversation ID (repeatable) or --all, not both")
    if not opts["conversation_ids"] and not opts["all_conversations"] and not opts["inputs"]:
        raise BadInputError("choose conversations with --conversation ID (repeatable), --all or --input FILE")
    store = obj.store
    if opts["inputs"]:
        ids = import_inputs(store, opts["inputs"])
    elif opts["all_conversations"]:
        with store.read() as session:
            ids = source_conversation_ids(session)
        if not ids:
            raise BadInputError("no conversations imported yet; run `experiment-runner import FILE` first")
    else:
        ids = list(opts["conversation_ids"])
    spec = ExperimentSpec(
        name=opts["name"],
        model=opts["model"],
        conversation_ids=ids,
        pass_through=opts["pass_through"],
        system_prompt_override=opts["system_prompt"],
        reasoning_config={"effort": opts["reasoning_effort"]} if opts["reasoning_effort"] else None,
        output_schema=check_fields(read_json_file(opts["output_schema_file"], "output schema")) if opts["output_schema_file"] else None,
        api_base=opts["api_base"],
        evaluator_model=opts["evaluator_model"],
        evaluator_api_base=opts["evaluator_api_base"],
        labels=load_labels(opts["labels_file"]) if opts["labels_file"] else None,
        response_format=opts["response_format"],
        evaluator_response_format=opts["evaluator_response_format"],
        evaluator_max_tokens=opts["evaluator_max_tokens"],
    )
    if opts["batch"]:
        check_batch_models([(None if spec.pass_through else spec.model, "--model"), (spec.evaluator_model, "--evaluator-model")])
    if opts["dry_run"]:
        return show_estimate(dry_run(store, spec, use_cache=not opts["no_cache"], batch=opts["batch"]), opts["as_json"])
    check_priced(called_models(spec), opts["max_cost"], opts["max_cost_unpriced_ok"])
    experiment_id = create_experiment(store, spec)
    if opts["batch"]:
        return execute_batches(obj, experiment_id, detach=opts["detach"], use_cache=not opts["no_cache"])
    execute(obj, experiment_id, opts["concurrency"], retry_failed=False, max_cost=opts["max_cost"], use_cache=not opts["no_cache"])


def import_inputs(store: Store, names: tuple[str, ...]) -> list[str]:
    """`run --input`: import the files (idempotently) and return their conversation ids, each once."""
    result = import_files(store, names)
    click.echo(import_summary(result), err=True)
    if not result.ids:
        raise BadInputError(f"--input {' '.join(names)}: no conversations in it")
    return list(dict.fromkeys(result.ids))


@cli.command("resume")
@click.argument("experiment_id")
@click.option("--retry-failed", is_flag=True, help="Also run the failed items (and failed evaluations) again.")
@concurrency_option
@no_cache_option
@detach_option
@with_options(budget_options)
@click.pass_obj
def resume_command(
    obj: Context, experiment_id: str, retry_failed: bool, concurrency: int, no_cache: bool, detach: bool, max_cost: float | None,
    max_cost_unpriced_ok: bool,
) -> None:
    """Finish an interrupted experiment: only items not completed run; completed ones are never redone.

        experiment-runner resume 4f6c0e1a-... --retry-failed
    """
    from experiment_runner.engine.experiments import get_experiment

    experiment = get_experiment(obj.store, experiment_id)  # unknown id: exit 2 before anything runs
    if uses_batches(obj, experiment_id):  # started with --batch: collect its jobs, never submit them again
        return execute_batches(obj, experiment_id, detach=detach, retry_failed=retry_failed, use_cache=not no_cache)
    check_priced(called_models(experiment), max_cost, max_cost_unpriced_ok)
    execute(obj, experiment_id, concurrency, retry_failed=retry_failed, max_cost=max_cost, use_cache=not no_cache)


@cli.command("reevaluate")
@click.argument("experiment_id")
@click.option("--evaluator-model", required=True, envvar="EXPERIMENT_RUNNER_EVALUATOR_MODEL", help="Evaluator model for the new evaluations.")
@with_options(evaluator_options)
@click.option("--name", help="Name of the new experiment (default: the old name + ' (re-evaluated)').")
@concurrency_option
@no_cache_option
@batch_option
@detach_option
@with_options(budget_options + dry_run_options)
@click.pass_obj
def reevaluate_command(obj: Context, experiment_id: str, name: str | None, concurrency: int, **opts: Any) -> None:
    """Evaluate an experiment's replies again, offline: a new experiment, no target calls, the old one untouched.

        experiment-runner reevaluate 4f6c0e1a-... --evaluator-model openai/gpt-4o --labels labels.json
    """
    spec = ExperimentSpec(
        name=name or "",
        model="-",
        conversation_ids=[],
        evaluator_model=opts["evaluator_model"],
        evaluator_api_base=opts["evaluator_api_base"],
        labels=load_labels(opts["labels_file"]) if opts["labels_file"] else None,
        evaluator_response_format=opts["evaluator_response_format"],
        evaluator_max_tokens=opts["evaluator_max_tokens"],
    )
    if opts["batch"]:
        check_batch_models([(spec.evaluator_model, "--evaluator-model")])
    if opts["dry_run"]:
        estimate = dry_run_reevaluation(obj.store, experiment_id, spec, use_cache=not opts["no_cache"], batch=opts["batch"])
        return show_estimate(estimate, opts["as_json"])
    check_priced([opts["evaluator_model"]], opts["max_cost"], opts["max_cost_unpriced_ok"])
    new_id = create_reevaluation(obj.store, experiment_id, spec)
    if opts["batch"]:
        return execute_batches(obj, new_id, detach=opts["detach"], use_cache=not opts["no_cache"])
    execute(obj, new_id, concurrency, retry_failed=False, max_cost=opts["max_cost"], use_cache=not opts["no_cache"])


def execute(
    obj: Context, experiment_id: str, concurrency: int, *, retry_failed: bool, max_cost: float | None = None, use_cache: bool = True
) -> None:
    """Run the experiment, show progress on a terminal, print its id last, exit as the contract says."""
    click.echo(f"Experiment {experiment_id}: running (if stopped, continue with: experiment-runner resume {experiment_id})", err=True)
    show = sys.stderr.isatty()
    progress = run_experiment(
        obj.store,
        experiment_id,
        RunOptions(concurrency=concurrency, retry_failed=retry_failed, handle_signals=True, max_cost_usd=max_cost, use_cache=use_cache),
        print_progress if show else None,
    )
    if show:
        click.echo("", err=True)
    click.echo(_summary(experiment_id, progress), err=True)
    if cached := usage_line(progress.cache.hits, progress.cache.saved_usd):
        click.echo(cached, err=True)
    click.echo(experiment_id)
    if progress.interrupted:
        click.echo(f"Interrupted. Continue with: experiment-runner resume {experiment_id}", err=True)
        sys.exit(130)
    if progress.budget_reached:
        raise ExperimentRunnerError(
            f"budget of ${max_cost:g} reached after {progress.done} items (${progress.spent_usd:.4f} spent); "
            f"resume {experiment_id} --max-cost Z to go on"
        )
    if progress.stopped_by:
        raise RunStoppedError(
            f"stopped: {progress.stopped_by}; the items not run stay pending: fix it, then `experiment-runner resume {experiment_id}`"
        )
    common = _most_common(progress)
    if progress.total and progress.failed == progress.total:
        raise ExperimentRunnerError(
            f"every item failed{common}; see `experiment-runner show {experiment_id}`, then `experiment-runner resume {experiment_id} --retry-failed`"
        )
    if progress.failed:
        click.echo(f"{progress.failed} item(s) failed{common}; see `experiment-runner show {experiment_id}`", err=True)


def _most_common(progress: Progress) -> str:
    """', most often: "REASON" (N)' for the failures of this run, or nothing."""
    if not progress.failure_reasons:
        return ""
    reason, count = progress.failure_reasons.most_common(1)[0]
    return f", most often: {reason} ({count}x)"


def print_progress(progress: Progress) -> None:
    """One self-overwriting progress line on stderr."""
    eta = f", ETA {progress.eta_seconds:.0f}s" if progress.eta_seconds is not None else ""
    click.echo(
        f"\r{progress.done}/{progress.total} done, {progress.failed} failed · {progress.rate:.1f} items/s{eta}   ",
        err=True, nl=False,
    )


def _summary(experiment_id: str, progress: Progress) -> str:
    parts = [f"{progress.completed} completed", f"{progress.failed} failed"]
    if progress.evaluations_failed:
        parts.append(f"{progress.evaluations_failed} evaluation(s) failed")
    if progress.total > progress.done:
        parts.append(f"{progress.total - progress.done} not finished")
    if progress.total == 0:
        return f"Experiment {experiment_id}: nothing left to run."
    return f"Experiment {experiment_id}: {progress.total} item(s) run: " + ", ".join(parts) + "."
