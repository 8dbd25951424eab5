"""`serve`: the REST API."""

import click

from experiment_runner.cli import Context, cli
from experiment_runner.cli.runs import concurrency_option


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="EXPERIMENT_RUNNER_HOST",
              help="Address to listen on (env EXPERIMENT_RUNNER_HOST); 0.0.0.0 for every interface.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, envvar="EXPERIMENT_RUNNER_PORT",
              help="TCP port (env EXPERIMENT_RUNNER_PORT); 0 picks a free one.")
@click.option("--token", envvar="EXPERIMENT_RUNNER_TOKEN",
              help="Require `Authorization: Bearer TOKEN` on every request but the docs (env EXPERIMENT_RUNNER_TOKEN).")
@click.option("--allow-api-base", "allow_api_bases", multiple=True, envvar="EXPERIMENT_RUNNER_ALLOW_API_BASE",
              help="A model endpoint URL requests may name besides loopback ones (repeatable; env, space-separated).")
@click.option("--max-body-mb", type=click.IntRange(1, 1_000_000), default=32, show_default=True, envvar="EXPERIMENT_RUNNER_MAX_BODY_MB",
              help="Largest request body accepted, in MiB as sent (env EXPERIMENT_RUNNER_MAX_BODY_MB); larger ones get 413.")
@click.option("--max-inflated-mb", type=click.IntRange(1, 1_000_000), default=64, show_default=True, envvar="EXPERIMENT_RUNNER_MAX_INFLATED_MB",
              help="Largest size a gzip/deflate body may inflate to, in MiB (env EXPERIMENT_RUNNER_MAX_INFLATED_MB); else 413.")
@concurrency_option
@click.pass_obj
def serve_command(
    obj: Context, host: str, port: int, token: str | None, concurrency: int, allow_api_bases: tuple[str, ...], max_body_mb: int, max_inflated_mb: int
) -> None:
    """Serve the experiments REST API (docs at /docs); created experiments run inside the server.

    Paths and shapes follow the hosted experiments API: POST/GET /v1/experiments, GET
    /v1/experiments/ID, /items and /export, DELETE /v1/experiments/ID, POST /v1/conversations.
    Experiments a server was running when it stopped (shut down or crashed) are resumed at startup, with
    their stored budgets; nothing stopped by a user, a budget or a failure is. Ctrl-C stops.

    \b
        experiment-runner serve --port 8000 --token "$EXPERIMENT_RUNNER_TOKEN"
    """
    from experiment_runner.server import launch
    from experiment_runner.server.bodies import BodyLimits

    def listening(where: launch.Listening) -> None:
        if not token and not where.loopback:
            click.echo(
                f"Warning: listening on {host} without --token: anyone who can reach this port can read, create "
                "and delete experiments (the API has no authentication).",
                err=True,
            )
        click.echo(f"Serving the experiments API on {where.url} (web UI at /, docs at /docs)", err=True)

    store = obj.store  # a bad database is reported before anything listens
    options = launch.ServeOptions(host, port, token, concurrency, allow_api_bases, BodyLimits.from_mb(max_body_mb, max_inflated_mb))
    try:
        launch.serve(store, options, listening)
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped: uvicorn has shut down cleanly
        click.echo("Stopped.", err=True)
