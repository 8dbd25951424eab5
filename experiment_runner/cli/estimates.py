"""Printing a dry run's estimate: a table per model and a total, or the `--json` document."""

from typing import Any

import click

from experiment_runner.cli.output import echo_json, table
from experiment_runner.engine.estimate import DEFAULT_EVALUATOR_OUTPUT_TOKENS, DEFAULT_TARGET_OUTPUT_TOKENS, Estimate


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.4f}"


def show_estimate(estimate: Estimate, as_json: bool) -> None:
    """Print the estimate (stdout); nothing was stored or called."""
    data = estimate.as_dict()
    if as_json:
        echo_json(data)
        return
    rows: list[list[Any]] = [
        [model, m["role"], m["calls"], m["cached_calls"], f"{m['estimated_input_tokens']:,}", f"{m['estimated_output_tokens']:,}",
         _usd(m["estimated_cost_usd"])]
        for model, m in data["per_model"].items()
    ]
    rows.append(["total", "", data["target_calls"] + data["evaluator_calls"], data["cached_calls"], f"{data['estimated_input_tokens']:,}",
                 f"{data['estimated_output_tokens']:,}", _usd(data["estimated_cost_usd"])])
    priced = " (as batch jobs: litellm's batch prices)" if data.get("batch") else ""
    click.echo(f"Dry run: {data['items']} item(s), {data['target_calls']} target call(s), {data['evaluator_calls']} evaluator call(s){priced}.")
    rules = data["rules"]
    if rules["count"]:
        rows.insert(-1, [f"{rules['count']} rule(s)", "rules", 0, 0, "0", "0", _usd(0.0)])
    click.echo(table(["model", "role", "calls", "cached", "input tokens", "output tokens", "cost"], rows))
    if data["cached_calls"]:
        click.echo(f"{data['cached_calls']} of these call(s) will come from the response cache: no tokens, $0 (--no-cache to count them).")
    if rules["count"]:
        click.echo(f"Rules: {rules['count']} rule(s) check {rules['evaluations']} reply(ies) with no model call, for free.")
    if data["unpriced_models"]:
        priced_usd = data["estimated_priced_cost_usd"]
        click.echo(f"No price known for {', '.join(data['unpriced_models'])}: cost unknown (priced calls alone: {_usd(priced_usd)}).")
    click.echo(
        f"Estimated: input tokens counted with litellm's tokenizer; output tokens are the recorded reply's length "
        f"(else {DEFAULT_TARGET_OUTPUT_TOKENS}) for the target and {DEFAULT_EVALUATOR_OUTPUT_TOKENS} per evaluation. Nothing was stored or called."
    )
