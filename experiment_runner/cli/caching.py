"""`cache stats|clear`, the `--no-cache` option, and how the run summary and `show` word what the cache did."""


import click

from experiment_runner.cli import Context, cli
from experiment_runner.cli.output import echo_json, table
from experiment_runner.results.documents import ExperimentSummary

no_cache_option = click.option(
    "--no-cache", is_flag=True, envvar="EXPERIMENT_RUNNER_NO_CACHE",
    help="Call the models even for requests answered before (and refresh their cached replies); env EXPERIMENT_RUNNER_NO_CACHE=1.",
)


def usage_line(calls: int, saved_usd: float, target_calls: int | None = None, evaluator_calls: int | None = None) -> str | None:
    """'12 call(s) came from the response cache (6 target, 6 evaluator), saving $0.0123.' or None without any."""
    if not calls:
        return None
    split = f" ({target_calls} target, {evaluator_calls} evaluator)" if target_calls is not None else ""
    # Calls that cost something when first made always saved more than $0: nothing saved means no price was known.
    saving = f"${saved_usd:,.4f}" if saved_usd > 0 else "an unknown amount (no price known for them)"
    return f"{calls} call(s) came from the response cache{split}, saving {saving} (they cost $0 in this run)."


def show_lines(summary: ExperimentSummary) -> list[str]:
    """`show`'s line on the cache (nothing when no call of the experiment came from it)."""
    c = summary.get("cache") or {}
    line = usage_line(c.get("calls", 0), c.get("saved_usd", 0.0), c.get("target_calls"), c.get("evaluator_calls"))
    return [f"Cache: {line}"] if line else []


def _size(n: int) -> str:
    return f"{n / 1024:,.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:,.1f} MB"


@cli.group("cache")
def cache_group() -> None:
    """The response cache in the store: replies kept per exact request, reused by every later run.

    \b
        experiment-runner cache stats
        experiment-runner cache clear --older-than 30
    """


@cache_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_obj
def stats_command(obj: Context, as_json: bool) -> None:
    """How many replies the cache holds per model, how often they were reused, and what that saved.

        experiment-runner cache stats --json
    """
    from experiment_runner.engine.cache import cache_stats

    stats = cache_stats(obj.store).as_dict()
    if as_json:
        echo_json(stats)
        return
    if not stats["entries"]:
        click.echo("The response cache is empty.")
        return
    rows = [(m["model"], m["entries"], m["hits"], f"${m['saved_usd']:,.4f}", _size(m["size_bytes"]), m["oldest"][:10], m["newest"][:10])
            for m in stats["per_model"]]
    click.echo(table(("model", "replies", "hits", "saved", "size", "oldest", "newest"), rows))
    click.echo(f"{stats['entries']} cached replies, {stats['hits']} hits, ${stats['saved_usd']:,.4f} saved, {_size(stats['size_bytes'])}.")


@cache_group.command("clear")
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), metavar="DAYS",
              help="Remove only replies stored more than DAYS days ago.")
@click.pass_obj
def clear_command(obj: Context, older_than: float | None) -> None:
    """Remove cached replies (all of them, or those older than DAYS); the next run calls the models again.

        experiment-runner cache clear --older-than 7
    """
    from experiment_runner.engine.cache import clear_cache

    removed = clear_cache(obj.store, older_than)
    scope = f" stored more than {older_than:g} day(s) ago" if older_than is not None else ""
    click.echo(f"Removed {removed} cached repl{'y' if removed == 1 else 'ies'}{scope}.")
