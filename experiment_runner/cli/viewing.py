"""`view`: the web UI on loopback, opened in the browser (like `inspect view`)."""

import webbrowser

import click

from experiment_runner.cli import Context, cli
from experiment_runner.cli.runs import concurrency_option


@cli.command("view")
@click.option("--port", type=click.IntRange(0, 65535), default=7575, show_default=True, envvar="EXPERIMENT_RUNNER_VIEW_PORT",
              help="TCP port on 127.0.0.1 (env EXPERIMENT_RUNNER_VIEW_PORT); 0 picks a free one.")
@click.option("--no-browser", is_flag=True, help="Print the address only; do not open a browser.")
@concurrency_option
@click.pass_obj
def view_command(obj: Context, port: int, no_browser: bool, concurrency: int) -> None:
    """Browse experiments in the web UI: serve it on 127.0.0.1 and open the browser. Ctrl-C stops.

    The same server as `serve` (runs started from the UI run inside it), on loopback only, without a token.

    \b
        experiment-runner view --port 7575
    """
    from experiment_runner.server import launch

    url = ""

    def listening(where: launch.Listening) -> None:
        nonlocal url
        url = where.url + "/"
        click.echo(f"Serving the web UI on {url} (the API under /v1, docs at /docs); Ctrl-C stops.", err=True)

    def started() -> None:
        if not no_browser:
            _open_browser(url)

    store = obj.store  # a bad database is reported before anything listens
    try:
        launch.view(store, port, concurrency, listening, started)
    except KeyboardInterrupt:
        click.echo("Stopped.", err=True)


def _open_browser(url: str) -> None:
    """Open `url` in the default browser; say so when there is none."""
    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    if not opened:
        click.echo(f"No browser found to open; open {url} yourself.", err=True)
