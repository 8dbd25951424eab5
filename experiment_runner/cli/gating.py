"""`gate`: fail a CI job when an experiment's metrics (or their change from a baseline) pass a limit."""

import sys
from pathlib import Path
from xml.etree import ElementTree

import click

from experiment_runner.cli import Context, cli
from experiment_runner.cli.output import echo_json
from experiment_runner.files import write_text_atomic
from experiment_runner.results.gate import Check, GateResult, parse_condition, run_gate


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _interval(check: Check) -> str:
    if check["ci_low"] is None:
        return "-"
    return f"[{check['ci_low']:+.4g}, {check['ci_high']:+.4g}]"


def _verdict(result: GateResult) -> str:
    failed = sum(not c["passed"] for c in result["checks"])
    total = len(result["checks"])
    return f"gate passed ({total} check(s))" if not failed else f"gate failed: {failed} of {total} check(s)"


def render_text(result: GateResult) -> str:
    """One line per check (`PASS`/`FAIL`, metric, value, limit and why), then the verdict."""
    lines = [f"{'PASS' if c['passed'] else 'FAIL'}  {c['name']}: {c['reason']}" for c in result["checks"]]
    return "\n".join([*lines, _verdict(result)])


def render_markdown(result: GateResult) -> str:
    """A table for a CI job summary (`>> $GITHUB_STEP_SUMMARY`)."""
    head = f"### experiment-runner gate: {'passed' if result['passed'] else 'failed'}\n\nExperiment `{result['experiment_id']}`"
    if result["baseline_id"]:
        head += f" against baseline `{result['baseline_id']}`" + (" (significant increases only)" if result["significant"] else "")
    rows = ["| result | check | value | limit | 95% CI | p | detail |", "|---|---|---|---|---|---|---|"]
    for c in result["checks"]:
        p = "-" if c["p_value"] is None else f"{c['p_value']:.4g}"
        cells = ["✅ pass" if c["passed"] else "❌ fail", f"`{c['name']}`", _number(c["value"]), _number(c["limit"]), _interval(c), p,
                 c["reason"].replace("|", "\\|")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, "", *rows, "", _verdict(result)])


def junit_xml(result: GateResult) -> str:
    """JUnit XML: one test case per check, a `<failure>` for each failed one."""
    failures = sum(not c["passed"] for c in result["checks"])
    suite = ElementTree.Element(
        "testsuite", name="experiment-runner gate", tests=str(len(result["checks"])), failures=str(failures), errors="0"
    )
    for c in result["checks"]:
        case = ElementTree.SubElement(suite, "testcase", classname=f"gate.{result['experiment_id']}", name=c["name"])
        if not c["passed"]:
            ElementTree.SubElement(case, "failure", message=c["reason"], type="GateFailure").text = c["reason"]
    root = ElementTree.Element("testsuites", tests=suite.get("tests", "0"), failures=str(failures))
    root.append(suite)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"


@cli.command("gate")
@click.argument("experiment_id")
@click.option("--baseline", "baseline_id", default=None, help="Experiment to measure increases against (items paired by source conversation).")
@click.option("--max", "maxima", multiple=True, metavar="METRIC=VALUE", help="Fail when METRIC is above VALUE (repeatable).")
@click.option("--max-increase", "increases", multiple=True, metavar="METRIC=VALUE",
              help="Fail when METRIC rose by more than VALUE over --baseline (repeatable).")
@click.option("--significant", is_flag=True, help="An increase fails only when its 95% confidence interval excludes 0.")
@click.option("--format", "fmt", type=click.Choice(("text", "markdown", "json")), default="text", show_default=True,
              help="markdown: a table for a CI job summary.")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False), default=None, help="Also write JUnit XML (one test case per check) to FILE.")
@click.pass_obj
def gate_command(obj: Context, experiment_id: str, baseline_id: str | None, maxima: tuple[str, ...], increases: tuple[str, ...],
                 significant: bool, fmt: str, junit_file: str | None) -> None:
    """Check an experiment's metrics against limits: exit 0 when all hold, 1 when one fails, 2 for bad usage.

    METRIC is an export metric key (issue_rate, avg_issues_per_evaluated_message, cost_per_1k, ...),
    issue_free_share, or label:NAME (share of evaluated messages with a span of that label). An unfinished
    experiment, or one whose evaluations all failed, never passes.

    \b
        experiment-runner gate NEW --baseline OLD --max-increase issue_rate=0 --significant --max cost_per_1k=2
    """
    conditions = [parse_condition("max", m) for m in maxima] + [parse_condition("max-increase", m) for m in increases]
    baseline_id = obj.experiment_id(baseline_id) if baseline_id else None
    result = run_gate(obj.store, obj.experiment_id(experiment_id), conditions, baseline_id=baseline_id, significant=significant)
    if junit_file:
        write_text_atomic(Path(junit_file), [junit_xml(result)])
    if fmt == "json":
        echo_json(result)
    else:
        click.echo(render_markdown(result) if fmt == "markdown" else render_text(result))
    if not result["passed"]:
        sys.exit(1)

