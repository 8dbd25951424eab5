"""`demo`: the Quickstart's end-to-end run on bundled data."""

import sys
from pathlib import Path

import click

from experiment_runner.cli import Context, cli
from experiment_runner.cli.estimates import show_estimate
from experiment_runner.cli.progress import ProgressPrinter
from experiment_runner.cli.results import render_score, render_summary
from experiment_runner.demo import run_demo
from experiment_runner.results.catalog import experiment_summary

REAL_MODEL_HINT = """\
The demo's models were local simulations: the bundled server replayed the recorded replies and
answered as evaluator with the human labels. To run real models on the same conversations:

  experiment-runner run --name first --model openai/gpt-4o-mini --all --evaluator-model openai/gpt-4o
      (needs OPENAI_API_KEY; any litellm model string works, e.g. anthropic/claude-3-5-haiku-latest)
  experiment-runner run --name local --model openai/llama3.1 --api-base http://localhost:11434/v1 --all
      (a local Ollama or vLLM server, no key needed)"""


@cli.command("demo")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True, help="Folder for the export (and report) files.")
@click.pass_obj
def demo_command(obj: Context, output_dir: Path) -> None:
    """Run the whole loop on bundled real data with local simulated models: no API key, no network.

    Imports 40 RAGTruth conversations, replays them and evaluates the replies through litellm against
    the bundled model server, prints the summary and the score against the human labels, and writes
    the export and an HTML report.

    \b
        experiment-runner demo
    """
    click.echo("Running the demo: 40 real RAGTruth conversations, simulated target and evaluator models...", err=True)
    printer = ProgressPrinter(terminal=True)
    result = run_demo(obj.store, output_dir, printer if sys.stderr.isatty() else None)
    printer.finish()
    click.echo(render_summary(experiment_summary(obj.store, result.experiment_id)))
    click.echo("\nScore against the human labels (experiment-runner score ... --gold):")
    click.echo(render_score(result.score))
    validity = "valid against export.schema.json" if result.export_problem is None else f"INVALID: {result.export_problem}"
    click.echo(f"\nExport: {result.export_path} ({result.export_bytes / 1024:,.0f} KB, {validity})")
    click.echo(f"Report: {result.report_path} (open it in a browser)")
    click.echo(f"Done in {result.seconds:.1f} s. Explore: experiment-runner list; experiment-runner show {result.experiment_id}")
    click.echo("\n" + REAL_MODEL_HINT)
    click.echo("\nWhat the first of those would cost (experiment-runner run ... --dry-run):")
    show_estimate(result.real_model_estimate, as_json=False)
