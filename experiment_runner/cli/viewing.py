"""`view`: the web UI on loopback, opened in the browser (like `inspect view`)."""

import threading
import time
import webbrowser
from typing import Any

import click

from experiment_runner.cli import Context, cli
from experiment_runner.cli.runs import concurrency_option
from experiment_runner.cli.serving import _listen, _log_config

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0


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
    import uvicorn

    from experiment_runner.server.app import create_app

    store = obj.store  # a bad database is reported before anything listens
    sock = _listen(HOST, port)
    url = f"http://{HOST}:{sock.getsockname()[1]}/"
    server = uvicorn.Server(uvicorn.Config(create_app(store, concurrency=concurrency), log_config=_log_config(), timeout_graceful_shutdown=5))
    click.echo(f"Serving the web UI on {url} (the API under /v1, docs at /docs); Ctrl-C stops.", err=True)
    threading.Thread(target=_open_when_ready, args=(server, url, no_browser), daemon=True, name="open-browser").start()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        click.echo("Stopped.", err=True)


def _open_when_ready(server: Any, url: str, no_browser: bool) -> None:
    """Once the server accepts connections, open `url` in the default browser; say so when there is none."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or server.should_exit:
            return
        time.sleep(0.05)
    if no_browser:
        return
    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    if not opened:
        click.echo(f"No browser found to open; open {url} yourself.", err=True)
