"""`run`, `resume` and `reevaluate`: creating and running experiments."""

import math
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import BaseModel

from experiment_runner.cli import Context, cli, option_for
from experiment_runner.cli.batching import batch_option, check_batch_models, detach_option, execute_batches, refuse_budget, uses_batches
from experiment_runner.cli.caching import no_cache_option
from experiment_runner.cli.conversations import import_summary
from experiment_runner.cli.estimates import show_estimate
from experiment_runner.cli.progress import ProgressPrinter, run_summary
from experiment_runner.cli.workers import run_progress, workers_option
from experiment_runner.conversation import Conversation
from experiment_runner.engine.estimate import check_priced, dry_run, dry_run_conversations, dry_run_reevaluation
from experiment_runner.engine.evaluate import DEFAULT_MAX_TOKENS
from experiment_runner.engine.experiments import SettingChanges, change_settings, create_experiment, create_reevaluation, get_experiment
from experiment_runner.engine.outcome import RunOutcome
from experiment_runner.engine.output_schema import check_fields
from experiment_runner.engine.progress import RunOptions
from experiment_runner.engine.runstate import budget_left
from experiment_runner.engine.spec import EFFORTS, ExperimentSpec, ReevaluationSpec
from experiment_runner.engine.structured import SETTINGS
from experiment_runner.engine.workplan import work_left
from experiment_runner.errors import BadInputError, ExperimentRunnerError
from experiment_runner.evaluation.evaluator import load_labels
from experiment_runner.evaluation.rules import load_rules
from experiment_runner.files import read_json_file
from experiment_runner.ingest.conversations import source_conversation_ids
from experiment_runner.ingest.importing import import_files, read_source
from experiment_runner.results.catalog import experiment_summary
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
    click.option("--rules", "rules_file", type=click.Path(dir_okay=False),
                 help='Rule evaluators JSON, no model call: [{"label", "regex"|"json_valid"|"contains"|"not_contains", "flags"?}].'),
]


class USD(click.ParamType[float]):
    """An amount of US dollars: a finite number above 0 (NaN or infinity would be no cap at all)."""

    name = "AMOUNT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not an amount of USD", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"must be a finite amount of USD above 0, got {value}", param, ctx)
        return number


budget_options = [
    click.option("--max-cost", type=USD(), envvar="EXPERIMENT_RUNNER_MAX_COST",
                 help="The experiment's budget in USD, stored with it and kept by every resume: no item starts once its "
                      "results would pass it (calls under way finish; the rest stay pending)."),
    click.option("--max-cost-unpriced-ok", is_flag=True, help="Allow --max-cost when a model has no known price (its calls count as $0)."),
]
dry_run_options = [
    click.option("--dry-run", is_flag=True, help="Check everything and print the estimated calls, tokens and cost; store and call nothing."),
    click.option("--json", "as_json", is_flag=True, help="With --dry-run: the estimate as JSON."),
]


F = TypeVar("F", bound=Callable[..., Any])


def with_options(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    """Apply a list of click options as one decorator, in the order they are listed."""

    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


# How a new experiment runs (run, reevaluate): processes and concurrency, the cache, batch jobs, the budget, dry run.
running_options: list[Callable[[F], F]] = [
    concurrency_option, workers_option, no_cache_option, batch_option, detach_option, *budget_options, *dry_run_options
]


@cli.command("run")
@click.option("--name", required=True, help="Experiment name, 1 to 255 characters.")
@click.option("--model", required=True, help="Target model, a litellm model string (openai/gpt-4o-mini, ollama/llama3, ...).")
@click.option("--conversation", "conversation_ids", multiple=True, help="A conversation id to include (repeatable).")
@click.option("--all", "all_conversations", is_flag=True, help="Include every imported conversation.")
@click.option("--input", "inputs", multiple=True, metavar="FILE", help="Import FILE (any import format, OTLP traces too) and run on exactly its conversations (repeatable).")
@click.option("--pass-through", is_flag=True, help="Copy the existing final replies instead of calling the target model.")
@click.option("--system-prompt", help="Replace (or add) the system message in every replayed conversation.")
@click.option("--reasoning-effort", type=click.Choice(EFFORTS), help="Reasoning effort passed to the target model.")
@click.option("--output-schema", "output_schema_file", type=click.Path(dir_okay=False), help="JSON list of {name, type, is_list, is_optional}: the reply must be that JSON.")
@click.option("--api-base", envvar="EXPERIMENT_RUNNER_API_BASE", help="OpenAI-compatible URL for the target model (a local Ollama/vLLM server).")
@click.option("--response-format", type=click.Choice(SETTINGS), default="auto", show_default=True,
              envvar="EXPERIMENT_RUNNER_RESPONSE_FORMAT", help="Structured output for --output-schema: " + FORMAT_HELP)
@click.option("--evaluator-model", envvar="EXPERIMENT_RUNNER_EVALUATOR_MODEL", help="Evaluator model; without it replies are not evaluated.")
@with_options(evaluator_options)
@with_options(running_options)
@click.pass_obj
def run_command(obj: Context, /, **opts: Any) -> None:
    """Create an experiment over imported conversations and run it to the end.

    Prints progress on stderr (on a terminal) and the experiment id as the last line on stdout.
    Ctrl-C stops cleanly (exit 130); `resume` continues.

    \b
        experiment-runner run --name baseline --model openai/gpt-4o-mini --all --evaluator-model openai/gpt-4o
        experiment-runner run --name replay --model openai/gpt-4o-mini --input traces.otlp.jsonl
    """
    check_selection(opts)
    in_memory = read_inputs(opts["inputs"]) if opts["dry_run"] and opts["inputs"] else None  # a dry run stores nothing
    store = None if in_memory is not None else obj.existing_store if opts["dry_run"] else obj.store  # a dry run creates no store
    ids = list(in_memory) if in_memory is not None else chosen_conversations(store, opts)
    spec = ExperimentSpec.from_input(spec_values(ExperimentSpec, opts) | {
        "conversation_ids": ids,
        "system_prompt_override": opts["system_prompt"],
        "reasoning_config": {"effort": opts["reasoning_effort"]} if opts["reasoning_effort"] else None,
        "output_schema": check_fields(read_json_file(opts["output_schema_file"], "output schema")) if opts["output_schema_file"] else None,
    })
    use_cache = not opts["no_cache"]
    if opts["batch"]:
        refuse_budget(opts["max_cost"])
        check_batch_models([(None if spec.pass_through else spec.model, "--model"), (spec.evaluator_model, "--evaluator-model")])
    if opts["dry_run"]:
        if in_memory is not None:  # no store is opened: nothing is known to be cached
            return show_estimate(dry_run_conversations(spec, in_memory, batch=opts["batch"]), opts["as_json"])
        assert store is not None
        return show_estimate(dry_run(store, spec, use_cache=use_cache, batch=opts["batch"]), opts["as_json"])
    assert store is not None
    check_priced(spec.called_models(), spec.max_cost_usd, opts["max_cost_unpriced_ok"])
    experiment_id = create_experiment(store, spec)
    if opts["batch"]:
        return execute_batches(obj, experiment_id, detach=opts["detach"], use_cache=use_cache)
    execute(obj, experiment_id, opts["concurrency"], retry_failed=False, use_cache=use_cache, workers=opts["workers"])


def spec_values(spec: type[BaseModel], opts: dict[str, Any]) -> dict[str, Any]:
    """The spec's fields that options give: those named as the field, then the files and the budget (an
    option's name for a field is `cli.option_for`'s, which the errors use too)."""
    values = {name: opts[name] for name in spec.model_fields if name in opts}
    files = {"labels": ("labels_file", load_labels), "rules": ("rules_file", load_rules)}
    values |= {name: load(opts[option]) if opts[option] else None for name, (option, load) in files.items()}
    return values | {"max_cost_usd": opts["max_cost"]}


def check_selection(opts: dict[str, Any]) -> None:
    """Exactly one way of choosing conversations: --input files, --all, or --conversation ids."""
    if opts["inputs"] and (opts["conversation_ids"] or opts["all_conversations"]):
        raise BadInputError("give either --input FILE (repeatable) or --conversation/--all, not both")
    if opts["conversation_ids"] and opts["all_conversations"]:
        raise BadInputError("give either --conversation ID (repeatable) or --all, not both")
    if not opts["conversation_ids"] and not opts["all_conversations"] and not opts["inputs"]:
        raise BadInputError("choose conversations with --conversation ID (repeatable), --all or --input FILE")


def chosen_conversations(store: Store | None, opts: dict[str, Any]) -> list[str]:
    """The conversation ids `run` is asked for: --input files (imported), --all, or --conversation ids."""
    assert store is not None  # only a dry run with --input has none, and it never asks
    if opts["inputs"]:
        return import_inputs(store, opts["inputs"])
    if opts["all_conversations"]:
        with store.read() as session:
            ids = source_conversation_ids(session)
        if not ids:
            raise BadInputError("no conversations imported yet; run `experiment-runner import FILE` first")
        return ids
    return list(opts["conversation_ids"])


def read_inputs(names: tuple[str, ...]) -> dict[str, Conversation]:
    """`run --input F --dry-run`: the files' conversations read in memory (id -> messages and tools, each id once), never stored."""
    conversations: dict[str, Conversation] = {}
    for name in names:
        for conversation in read_source(name).conversations:
            conversations.setdefault(conversation.id, {"id": conversation.id, "messages": conversation.messages, "tools": conversation.tools})
    if not conversations:
        raise BadInputError(f"--input {' '.join(names)}: no conversations in it")
    return conversations


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
@click.option("--api-base", help="Send the target model's calls here from now on (a fixed port; recorded on the experiment).")
@click.option("--evaluator-api-base", help="Send the evaluator's calls here from now on (recorded on the experiment).")
@concurrency_option
@workers_option
@no_cache_option
@detach_option
@with_options(budget_options)
@click.pass_obj
def resume_command(obj: Context, /, experiment_id: str, retry_failed: bool, concurrency: int, **opts: Any) -> None:
    """Finish a stopped experiment: only items not completed run; completed ones are never redone.

    It runs with the stored settings and budget; --api-base, --evaluator-api-base and --max-cost change
    them for good (each change is recorded, and checked as `run` checks it).

    \b
        experiment-runner resume 4f6c0e1a --retry-failed

    \b
        experiment-runner resume 4f6c0e1a --api-base http://localhost:8081/v1 --max-cost 2
    """
    experiment_id = obj.experiment_id(experiment_id)
    experiment = get_experiment(obj.store, experiment_id)  # unknown id: exit 2 before anything runs
    obj.field_names = resume_field_names(experiment_id)
    if not work_left(obj.store, experiment, retry_failed):
        hint = " (its failed items run again with --retry-failed)" if work_left(obj.store, experiment, True) else ""
        click.echo(f"Experiment {experiment_id} is already complete: nothing to run{hint}.", err=True)
        click.echo(experiment_id)
        return
    use_cache = not opts["no_cache"]
    if uses_batches(obj, experiment_id):  # started with --batch: collect its jobs, never submit them again
        refuse_budget(opts["max_cost"])
        change_settings(obj.store, experiment_id, SettingChanges(opts["api_base"], opts["evaluator_api_base"], None))
        return execute_batches(obj, experiment_id, detach=opts["detach"], retry_failed=retry_failed, use_cache=use_cache)
    check_priced(ExperimentSpec.from_row(experiment).called_models(), opts["max_cost"], opts["max_cost_unpriced_ok"])
    budget = budget_left(obj.store, experiment)
    if opts["max_cost"] is None and budget.left_usd is not None and budget.left_usd <= 0:
        raise ExperimentRunnerError(
            f"the budget of experiment {experiment_id} is spent (${budget.cap_usd:g}, ${budget.spent_usd:.6f} spent); "
            f"raise it to go on: experiment-runner resume {experiment_id} --max-cost USD"
        )
    changes = SettingChanges(opts["api_base"], opts["evaluator_api_base"], opts["max_cost"])
    change_settings(obj.store, experiment_id, changes)  # the preflight of `run`, then the changes are stored
    execute(obj, experiment_id, concurrency, retry_failed=retry_failed, use_cache=use_cache, workers=opts["workers"])


def resume_field_names(experiment_id: str) -> Callable[[str], str]:
    """How `resume`'s errors name inputs: it has no --model, so a model is the experiment's stored one, and
    an endpoint is changed with `resume ID --api-base URL` (the preflight's missing-key hint says so)."""
    stored = {"model": "the experiment's stored model", "evaluator_model": "the experiment's stored evaluator model"}

    def name(field: str) -> str:
        if field in stored:
            return stored[field]
        if field in ("api_base", "evaluator_api_base"):
            return f"`experiment-runner resume {experiment_id} {option_for(field)} URL`"
        return option_for(field)

    return name


@cli.command("reevaluate")
@click.argument("experiment_id")
@click.option("--evaluator-model", envvar="EXPERIMENT_RUNNER_EVALUATOR_MODEL", help="Evaluator model for the new evaluations (or --rules alone).")
@with_options(evaluator_options)
@click.option("--name", help="Name of the new experiment (default: the old name + ' (re-evaluated)').")
@with_options(running_options)
@click.pass_obj
def reevaluate_command(obj: Context, /, experiment_id: str, name: str | None, concurrency: int, **opts: Any) -> None:
    """Evaluate an experiment's replies again, offline: a new experiment, no target calls, the old one untouched.

    It keeps the old experiment's rules unless --rules gives its own (a file holding [] drops them).

    \b
        experiment-runner reevaluate 4f6c0e1a --evaluator-model openai/gpt-4o --labels labels.json
    """
    experiment_id = obj.experiment_id(experiment_id)
    spec = ReevaluationSpec.from_input(spec_values(ReevaluationSpec, opts) | {"name": name or None})
    use_cache = not opts["no_cache"]
    if opts["batch"]:
        refuse_budget(opts["max_cost"])
        check_batch_models([(spec.evaluator_model, "--evaluator-model")])
    if opts["dry_run"]:
        estimate = dry_run_reevaluation(obj.store, experiment_id, spec, use_cache=use_cache, batch=opts["batch"])
        return show_estimate(estimate, opts["as_json"])
    check_priced([spec.evaluator_model] if spec.evaluator_model else [], spec.max_cost_usd, opts["max_cost_unpriced_ok"])
    new_id = create_reevaluation(obj.store, experiment_id, spec)
    if opts["batch"]:
        return execute_batches(obj, new_id, detach=opts["detach"], use_cache=use_cache)
    execute(obj, new_id, concurrency, retry_failed=False, use_cache=use_cache, workers=opts["workers"])


def execute(
    obj: Context, experiment_id: str, concurrency: int, *, retry_failed: bool, use_cache: bool = True, workers: int | None = None
) -> None:
    """Run the experiment (within its stored budget; in `workers` processes), show its progress, print its id
    last, then its outcome: the error line of a run that stopped early or failed every item (exit 1), the
    Ctrl-C notice (exit 130), or the failed items' line."""
    click.echo(f"Experiment {experiment_id}: running (if stopped, continue with: experiment-runner resume {experiment_id})", err=True)
    printer = ProgressPrinter(terminal=sys.stderr.isatty())
    options = RunOptions(concurrency=concurrency, retry_failed=retry_failed, handle_signals=True, runner="cli",
                         tick_seconds=printer.tick_seconds, use_cache=use_cache)
    progress = run_progress(obj, experiment_id, options, workers, printer)
    printer.finish()
    outcome = RunOutcome.of(experiment_id, progress)
    click.echo("\n".join(run_summary(outcome, progress, experiment_summary(obj.store, experiment_id))), err=True)
    click.echo(experiment_id)
    if (error := outcome.error()) is not None:
        raise error
    if (verdict := outcome.verdict()) is not None:  # interrupted, or some items failed
        click.echo(verdict, err=True)
    if outcome.exit_code:
        sys.exit(outcome.exit_code)
