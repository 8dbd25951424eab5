"""`import` and `conversations`."""

import click

from experiment_runner.cli import Context, cli
from experiment_runner.cli.output import echo_json, table
from experiment_runner.ingest.conversations import list_conversations
from experiment_runner.ingest.importing import ImportResult, import_files


@cli.command("import")
@click.argument("files", nargs=-1, required=True)
@click.option("--otlp-each-span", is_flag=True, help="OTLP traces: every inference span its own conversation (id TRACE-SPAN).")
@click.pass_obj
def import_command(obj: Context, files: tuple[str, ...], otlp_each_span: bool) -> None:
    """Store conversations from FILES (JSONL or a JSON array; `-` reads stdin).

    Native parts shape, OpenAI chat shape, or OTLP traces (JSON detected by shape; protobuf `.pb`).
    Prints the ids, one a line, each once; a conversation without an id gets one from its content. A bad line is
    reported with its file and line number and nothing is stored.

    \b
        experiment-runner import conversations.jsonl traces.otlp.jsonl
    """
    result = import_files(obj.store, files, otlp_each_span=otlp_each_span)
    for conv_id in dict.fromkeys(result.ids):  # an id the input holds twice is still one conversation
        click.echo(conv_id)
    click.echo(import_summary(result), err=True)


def import_summary(result: ImportResult) -> str:
    """The one-line summary of an import: new + already stored (+ duplicates in the input) = the count,
    with the trace spans skipped when there were traces."""
    spans = f"; {result.skipped_spans} of {result.spans} trace span(s) skipped (not inference spans)" if result.spans else ""
    duplicates = f", {result.duplicates} duplicate(s) in the input" if result.duplicates else ""
    return f"Imported {len(result.ids)} conversation(s): {result.new} new, {result.unchanged} already stored{duplicates}{spans}."


@cli.command("conversations")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Show at most N conversations.")
@click.pass_obj
def conversations_command(obj: Context, as_json: bool, limit: int | None) -> None:
    """List imported conversations: id, message count, roles and the first user text.

    \b
        experiment-runner conversations --limit 10
    """
    listing = list_conversations(obj.store, limit)
    if as_json:
        echo_json(listing)
        return
    rows = [
        (c["id"], c["messages"], " ".join(f"{r}:{n}" for r, n in c["roles"].items()), c["first_user_text"][:60])
        for c in listing
    ]
    click.echo(table(("id", "messages", "roles", "first user text"), rows))
