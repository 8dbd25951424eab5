"""`list`, `show`, `export`, `delete` and `score`: reading experiments back."""

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from experiment_runner.cli import Context, cli
from experiment_runner.cli.batching import show_lines as batch_lines
from experiment_runner.cli.caching import show_lines as cache_lines
from experiment_runner.cli.output import echo_json, output_option, table, usd
from experiment_runner.conversation import drop_words
from experiment_runner.errors import BadInputError
from experiment_runner.results.catalog import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ExperimentLine,
    delete_experiment,
    experiment_summary,
    list_experiments,
    list_overview,
)
from experiment_runner.results.documents import ExperimentSummary, RunState
from experiment_runner.results.export import target_cost, write_export
from experiment_runner.results.gold import read_gold_file, score_experiment
from experiment_runner.results.span_scores import GoldScores, SpanScore
from experiment_runner.results.vocabulary import metric

if TYPE_CHECKING:
    from experiment_runner.results.against import AgainstScores
    from experiment_runner.results.agreement import Kappa


def _status(summary: Mapping[str, int]) -> str:
    """`38/40 done, 2 failed, 1 open`."""
    text = f"{summary['completed']}/{summary['total']} done"
    if summary["failed"]:
        text += f", {summary['failed']} failed"
    open_items = summary["pending"] + summary["in_progress"]
    if open_items:
        text += f", {open_items} open"
    return text


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def _line_row(e: ExperimentLine) -> tuple[str, ...]:
    """One row of `list`'s table: the issue rate `-` until an evaluation is received."""
    rate = _percent(e.issue_rate) if e.evaluations_received else "-"
    return (e.id, e.name, e.model, _status(e.status_summary), rate, usd(e.cost.total_usd, e.cost.known), _when(e.created_at))


def _when(stamp: str | None) -> str:
    """`2026-11-24 09:30` from an exported timestamp."""
    return stamp[:16].replace("T", " ") if stamp else "-"


@cli.command("list")
@click.option(
    "--limit", type=int, default=DEFAULT_LIMIT, show_default=True, help=f"Experiments per page (1 to {MAX_LIMIT})."
)
@click.option("--cursor", default=None, help="Continue from a previous page (its next_page_cursor).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the page as JSON (next_page_cursor, query, has_more, items)."
)
@click.pass_obj
def list_command(obj: Context, limit: int, cursor: str | None, as_json: bool) -> None:
    """List experiments, newest first: status counts, issue rate, creation time.

    \b
        experiment-runner list --limit 20
    """
    if as_json:
        echo_json(list_experiments(obj.store, limit=limit, cursor=cursor))
        return
    page = list_overview(obj.store, limit=limit, cursor=cursor)
    click.echo(table(("id", "name", "model", "status", "issue rate", "cost", "created"), [_line_row(e) for e in page["items"]]))
    if page["has_more"]:
        click.echo(f"More: experiment-runner list --cursor {page['next_page_cursor']}", err=True)


def _average(total: float, count: int) -> str:
    return f"{total / count:,.1f}" if count else "0"


def _metrics_lines(e: ExperimentSummary) -> list[str]:
    m, evaluated, completed = e["metrics"], e["evaluations_received"], e["completed_items_count"]
    with_issues = evaluated - m["issue_free_message_count"]
    tokens_in, tokens_out = m["total_input_tokens"], m["total_output_tokens"]
    shown = {
        "issue_rate": f"{_percent(m['issue_rate'])} ({with_issues} of {evaluated} evaluated messages)",
        "total_issues": f"{m['total_issues']} ({m['avg_issues_per_evaluated_message']:.2f} per evaluated msg.)",
        "issue_free_message_count": f"{m['issue_free_message_count']}",
        "total_input_tokens": f"{tokens_in:,} ({_average(tokens_in, completed)} per item)",
        "total_output_tokens": f"{tokens_out:,} ({_average(tokens_out, completed)} per item)",
        "avg_response_latency_ms": f"avg {m['avg_response_latency_ms']:,.0f} ms, max {m['max_response_latency_ms']:,.0f} ms",
        "total_generation_time_ms": f"{m['total_generation_time_ms'] / 1000:,.1f} s",
        "cost_per_1k": _cost(e),
    }
    return [f"  {metric(key).label:<21}{text}" for key, text in shown.items()]


def _cost(e: ExperimentSummary) -> str:
    """`$0.0123 ($0.3075 per 1k items)`, or `unknown` (saying why) when no completed reply has a known price."""
    cost = target_cost(e)
    if cost.known == "unknown":
        return f"unknown (no price known for the {e['completed_items_count']} completed replies)"
    text = f"{usd(cost.total_usd, cost.known)} ({usd(cost.per_1k_usd, cost.known)} per 1k items)"
    if cost.known == "partial":
        text += f"; {e['unpriced_items_count']} of {e['completed_items_count']} replies have no known price"
    return text


def _settings_lines(e: ExperimentSummary) -> list[str]:
    reasoning = ", ".join(f"{k}={v}" for k, v in (e["reasoning_config"] or {}).items()) or "none"
    prompt = e["system_prompt_override"]
    if prompt is not None and len(prompt) > 100:
        prompt = prompt[:99] + "…"
    evaluator = f"{e['evaluator_model']} (labels: {', '.join(e['labels'])})" if e["evaluator_model"] else "none"
    lines = [
        f"Experiment {e['name']}",
        f"  id               {e['id']}",
        f"  model            {e['model']}" + (f" at {e['api_base']}" if e["api_base"] else ""),
        f"  mode             {'pass-through' if e['pass_through'] else 'replay'}",
        f"  system prompt    {prompt!r}" if prompt is not None else "  system prompt    (as in each conversation)",
        f"  reasoning        {reasoning}",
        f"  evaluator        {evaluator}",
    ]
    if e.get("rules"):
        lines.append(f"  rules            {len(e['rules'])} (labels: {', '.join(dict.fromkeys(r['label'] for r in e['rules']))}; no model call)")
    if e["source_experiment_id"]:
        lines.append(f"  re-evaluates     {e['source_experiment_id']}")
    lines += [f"  created          {e['created_at']}", f"  completed        {e['completed_at'] or 'not yet'}"]
    return lines + _run_lines(e.get("run") or {})


STOP_NAMES = {
    "interrupted": "stopped by the user", "budget": "stopped by its budget", "systematic": "stopped on a systematic failure",
    "failed": "stopped: the run failed", "shutdown": "stopped when its server shut down (the next `serve` resumes it)",
}


def _run_lines(run: RunState) -> list[str]:
    """The run state: running, stopped (why, when), crashed; the budget; what `resume` changed."""
    state = run.get("state")
    lines = []
    if state == "stopped":
        lines.append(f"  state            {STOP_NAMES.get(run['stop_reason'] or '', run['stop_reason'])} at {_when(run['stopped_at'])}: "
                     f"{run['stop_detail']}")
    elif state == "crashed":
        lines.append("  state            crashed: its runner died holding the lease (`resume` continues it)")
    elif state == "running":
        lines.append(f"  state            running ({run.get('runner') or 'cli'})")
    if run.get("max_cost_usd") is not None:
        lines.append(f"  budget           ${run['max_cost_usd']:g} (${run['spent_usd']:.6f} spent by its results)")
    lines += [f"  changed          {_when(c['at'])}: {c['field']} {c['from']} -> {c['to']}" for c in run.get("setting_changes", [])]
    return lines


def _evaluation_lines(e: ExperimentSummary) -> list[str]:
    """Evaluations: how many completed and failed, the evaluator's tokens and cost, what was dropped and why."""
    ev = e.get("evaluation_summary") or {}
    by_status = ev.get("by_status", {})
    failed = by_status.get("failed", 0)
    lines = [f"Evaluations: {e['evaluations_received']} completed of {e['evaluations_expected']} expected" + (f", {failed} failed" if failed else "")]
    if not e["evaluations_expected"]:
        return lines
    cost = "unknown" if ev.get("cost_usd") is None else f"${ev['cost_usd']:,.4f}"
    lines.append(f"  evaluator tokens in {ev.get('input_tokens', 0):,}, out {ev.get('output_tokens', 0):,}; cost {cost}")
    modes = (e.get("structured_output") or {}).get("evaluator") or {}
    if modes:
        used = modes.get("used") or "not yet known"
        lines.append(f"  structured output    {used} (setting {modes.get('setting', 'auto')})")
    dropped = ev.get("dropped") or {}
    if dropped:
        detail = ", ".join(f"{drop_words(k).name} {n}" for k, n in dropped.items())
        lines.append(f"  annotations dropped  {sum(dropped.values())} ({detail})")
    if e["evaluations_received"] and not e["metrics"]["total_issues"] and dropped:
        lines.append("  note: every annotation the evaluator returned was dropped; the issue rate below judges nothing")
    if ev.get("recent_errors"):
        lines.append("  latest errors of failed evaluations:")
        lines += [f"    item {r['position']} ({r['item_id']}): {r['error_message']}" for r in ev["recent_errors"]]
    return lines


def render_summary(e: ExperimentSummary) -> str:
    """The text `show` prints for an `experiment_summary`."""
    s = e["status_summary"]
    lines = _settings_lines(e) + [
        "",
        f"Items: {s['total']} ({s['completed']} completed, {s['failed']} failed, {s['pending']} pending, "
        f"{s['in_progress']} in progress)",
        *_evaluation_lines(e),
        *cache_lines(e),
        *batch_lines(e),
        "",
        "Metrics",
        *_metrics_lines(e),
    ]
    m = e["metrics"]
    if m["issue_labels"]:
        total = m["total_issues"]
        rows = [(label, n, _percent(n / total)) for label, n in m["issue_labels"].items()]
        lines += ["", table(("label", "count", "share of issues"), rows)]
    if m["parameter_issues"]:
        rows = [(tool, p, n) for tool, params in m["parameter_issues"].items() for p, n in params.items()]
        lines += ["", "Parameter issues", table(("tool", "parameter", "count"), rows)]
    if e["recent_errors"]:
        lines += ["", "Latest errors of failed items"]
        lines += [f"  item {r['position']} ({r['item_id']}): {r['error_message']}" for r in e["recent_errors"]]
    return "\n".join(lines)


@cli.command("show")
@click.argument("experiment_id")
@click.pass_obj
def show_command(obj: Context, experiment_id: str) -> None:
    """Show one experiment: its settings, progress, metrics, issues by label and latest errors.

    \b
        experiment-runner show 497f6eca  (an id, or a unique prefix of one)
    """
    click.echo(render_summary(experiment_summary(obj.store, obj.experiment_id(experiment_id))))


@cli.command("export")
@click.argument("experiment_id")
@output_option("Write to FILE (atomically; a symlink's target) instead of stdout (`-`).")
@click.pass_obj
def export_command(obj: Context, experiment_id: str, output: str | None) -> None:
    """Export an experiment as JSON (export.schema.json): settings, metrics, items, evaluations.

    \b
        experiment-runner export 497f6eca -o experiment.json
    """
    experiment_id = obj.experiment_id(experiment_id)
    if output is None or output == "-":
        write_export(obj.store, experiment_id, sys.stdout)
        sys.stdout.write("\n")
        return
    stats = write_export(obj.store, experiment_id, output)
    click.echo(f"Wrote {output} ({stats.items} items, {stats.bytes / 1024:,.1f} KB)", err=True)


@cli.command("delete")
@click.argument("experiment_id")
@click.pass_obj
def delete_command(obj: Context, experiment_id: str) -> None:
    """Delete an experiment with its items, evaluations and result conversations (source conversations stay).

    \b
        experiment-runner delete 497f6eca
    """
    experiment_id = obj.experiment_id(experiment_id)
    deleted = delete_experiment(obj.store, experiment_id)
    rows = deleted.rows
    click.echo(
        f"Deleted experiment {experiment_id} ({deleted.name}): {rows.items} item(s), {rows.evaluations} evaluation(s), "
        f"{rows.annotations} annotation(s), {rows.result_conversations} result conversation(s); source conversations kept."
    )


def _score_cells(s: SpanScore) -> list[str]:
    """P, R, F1 as `0.812`, or `-` where undefined: precision with no prediction, recall and F1 with no gold span."""
    cells = [f"{s[k]:.3f}" for k in ("precision", "recall", "f1")]
    if not s["predicted"]:
        cells[0] = "-"
    if not s["gold"]:
        cells[1] = cells[2] = "-"
    return cells


def _score_row(name: str, row: dict[str, SpanScore]) -> tuple[Any, ...]:
    exact, overlap = row["exact"], row["overlap"]
    return (name, *_score_cells(exact), *_score_cells(overlap), exact["predicted"], exact["gold"])


def render_score(result: GoldScores) -> str:
    """The text `score` prints: the P/R/F1 table and what was scored or skipped."""
    rows = [_score_row("overall", result["overall"]), _score_row("any label", result["overall_any_label"])]
    rows += [_score_row(label, row) for label, row in result["per_label"].items()]
    headers = ("spans", "exact P", "exact R", "exact F1", "overlap P", "overlap R", "overlap F1", "predicted", "gold")
    return "\n".join(
        [
            table(headers, rows),
            "",
            f"Scored {result['scored']} replies; skipped {result['skipped_reply_differs']} whose reply differs "
            f"from the gold's and {result['skipped_not_evaluated']} not evaluated; "
            f"{result['gold_without_item']} gold lines match no item."
            + (" '-': undefined (no predicted span, or no gold span, with that label)." if any("-" in r for r in rows) else ""),
        ]
    )


def render_agreement(result: "AgainstScores") -> str:
    """The text `score --against` prints: `render_score`'s table (B as gold) and character-level kappa."""
    k = result["kappa"]

    def cells(name: str, row: "Kappa") -> tuple[Any, ...]:
        value = "-" if row["kappa"] is None else f"{row['kappa']:.3f}"
        agreement = "-" if row["observed_agreement"] is None else f"{row['observed_agreement']:.3f}"
        return (name, value, agreement, f"{row['characters']:,}")

    rows = [cells("overall", k["overall"])] + [cells(label, row) for label, row in k["per_label"].items()]
    return "\n".join([
        f"Spans of {result['experiment_id']} against {result['against']} (the reference, in the gold columns)",
        render_score(result).replace("gold lines match no item", "reference items are not in the experiment")
        .replace("from the gold's", "from the reference's"),
        "",
        "Cohen's kappa per character",
        table(("spans", "kappa", "agreement", "characters"), rows),
    ])


@cli.command("score")
@click.argument("experiment_id")
@click.option(
    "--gold",
    "gold_file",
    type=click.Path(dir_okay=False),
    help="Gold spans JSONL (conversation_id, message_index, part_index, annotations).",
)
@click.option("--against", "reference_id", default=None,
              help="Another experiment on the same replies (e.g. a re-evaluation by another judge), as the reference.")
@click.option("--gold-labels", default=None, help="Keep only gold spans with these labels (comma-separated).")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.pass_obj
def score_command(obj: Context, experiment_id: str, gold_file: str | None, reference_id: str | None, gold_labels: str | None, as_json: bool) -> None:
    """Score an experiment's annotations against human gold spans, or against another experiment's spans.

    Precision, recall, F1 (exact and overlap); with --against also Cohen's kappa per character.

    \b
        experiment-runner score 497f6eca --gold fixtures/ragtruth-sample.gold.jsonl
        experiment-runner score JUDGE_RUN_2 --against JUDGE_RUN_1
    """
    if (gold_file is None) == (reference_id is None):
        raise BadInputError("give either --gold FILE or --against EXPERIMENT_ID")
    if reference_id is not None:
        if gold_labels is not None:
            raise BadInputError("--gold-labels goes with --gold, not --against")
        from experiment_runner.results.against import score_against

        agreement = score_against(obj.store, obj.experiment_id(experiment_id), obj.experiment_id(reference_id))
        if as_json:
            echo_json(agreement)
        else:
            click.echo(render_agreement(agreement))
        return
    assert gold_file is not None
    labels = [label.strip() for label in gold_labels.split(",") if label.strip()] if gold_labels is not None else None
    result = score_experiment(obj.store, obj.experiment_id(experiment_id), read_gold_file(gold_file), labels)
    if as_json:
        echo_json(result)
    else:
        click.echo(render_score(result))
