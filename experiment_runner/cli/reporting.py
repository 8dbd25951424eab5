"""`report` and `compare`: looking at experiments."""

from typing import Any

import click

from experiment_runner.cli import Context, cli
from experiment_runner.cli.output import echo_json, output_option, table
from experiment_runner.cli.paired import paired_lines
from experiment_runner.report.html import render_page, write_report
from experiment_runner.results.compare import Comparison, compare_experiments
from experiment_runner.results.vocabulary import metric


@cli.command("report")
@click.argument("experiment_id")
@output_option("HTML file to write (default: report-<first 8 characters of the id>.html; `-`: stdout).")
@click.option(
    "--compare", "compare_id", default=None, help="Show this second experiment's replies side by side (B vs A)."
)
@click.pass_obj
def report_command(obj: Context, experiment_id: str, output: str | None, compare_id: str | None) -> None:
    """Write a self-contained HTML report: metrics, charts, and every reply with its issues highlighted.

    Open it in a browser from disk; it loads nothing from the network. Prints the file's path.

    \b
        experiment-runner report 497f6eca -o report.html
    """
    experiment_id = obj.experiment_id(experiment_id)
    compare_id = obj.experiment_id(compare_id) if compare_id else None
    if output == "-":
        click.echo(render_page(obj.store, experiment_id, compare_id=compare_id), nl=False)
        return
    if output is None:
        output = f"report-{experiment_id[:8]}" + (f"-vs-{compare_id[:8]}" if compare_id else "") + ".html"
    click.echo(str(write_report(obj.store, experiment_id, output, compare_id=compare_id)))


def _value(value: Any, kind: str, signed: bool = False) -> str:
    if value is None:  # a cost is None only when no reply of that experiment had a known price
        return "unknown" if kind == "usd" and not signed else "-"
    if kind == "pct":
        value, kind = value * 100, "f1"
    if isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    else:
        text = f"{value:,.{4 if kind == 'usd' else 1 if kind in ('f1', 'ms', 's') else 2}f}"
    return ("+" + text) if signed and value > 0 else text


def render_comparison(result: Comparison) -> str:
    """The text `compare` prints: who is A and B, the metrics table, issues per label, most changed items."""
    a, b, shared = result["a"], result["b"], result["conversations"]
    rows = []
    for row in result["metrics"]:
        shown = metric(row["metric"])
        title, kind = shown.title + (f" ({shown.unit})" if shown.unit else ""), shown.format
        rows.append((title, _value(row["a"], kind), _value(row["b"], kind), _value(row["delta"], kind, signed=True)))
    lines = [
        f"A  {a['id']}  {a['name']}  ({a['model']})",
        f"B  {b['id']}  {b['name']}  ({b['model']})",
        f"Source conversations: {shared['shared']} in both, {shared['only_a']} only in A, {shared['only_b']} only in B",
        "",
        table(("metric", "A", "B", "delta"), rows),
    ]
    if result["labels"]:
        labels = [(r["label"], r["a"], r["b"], _value(r["delta"], "int", signed=True)) for r in result["labels"]]
        lines += ["", table(("label", "A", "B", "delta"), labels)]
    if result["changed_items"]:
        changed = [
            (r["source_conversation_id"], r["a"], r["b"], _value(r["delta"], "int", signed=True))
            for r in result["changed_items"]
        ]
        lines += ["", "Items whose issue count changed most", table(("source conversation", "A", "B", "delta"), changed)]
    lines += paired_lines(result)
    return "\n".join(lines)


@cli.command("compare")
@click.argument("experiment_a")
@click.argument("experiment_b")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_obj
def compare_command(obj: Context, experiment_a: str, experiment_b: str, as_json: bool) -> None:
    """Compare experiment B with A: metrics and issues per label with deltas (B - A), most changed items.

    Items are matched by their source conversation. On the items evaluated in both, each issue metric's
    difference gets a 95% confidence interval and a p-value (exact McNemar for rates, seeded paired
    bootstrap for issues per message); significant ones are marked *.

    \b
        experiment-runner compare 497f6eca 0b9d4c1e
    """
    result = compare_experiments(obj.store, obj.experiment_id(experiment_a), obj.experiment_id(experiment_b))
    if as_json:
        echo_json(result)
    else:
        click.echo(render_comparison(result))
