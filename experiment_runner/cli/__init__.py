"""The `experiment-runner` command line: a thin layer that parses options, calls the core, prints.

Errors raised by the core (`ExperimentRunnerError`) become one `Error: ...` line on stderr and the
error's exit status here, in one place; nothing the user can get wrong prints a traceback.
"""

import importlib
import os
import sys
from typing import Any

import click

from experiment_runner import __version__
from experiment_runner.errors import ExperimentRunnerError
from experiment_runner.store import DEFAULT_DB, Store, open_store


class Context:
    """What every command gets: the database path, and the store opened on first use."""

    def __init__(self, db: str):
        self.db = db
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.db)
        return self._store


# Which module defines each command. A command's module is imported only when that command runs (or
# help lists it), so `list` does not pay for the engine, `run` not for the server, and so on.
COMMAND_MODULES = {
    "import": "conversations", "conversations": "conversations",
    "run": "runs", "resume": "runs", "reevaluate": "runs",
    "list": "results", "show": "results", "export": "results", "delete": "results", "score": "results",
    "report": "reporting", "compare": "reporting", "serve": "serving", "demo": "demo", "cache": "caching",
}


class Group(click.Group):
    """A click group that loads command modules lazily and reports our errors as `Error: ...` with the error's exit status."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMAND_MODULES) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"experiment_runner.cli.{COMMAND_MODULES[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ExperimentRunnerError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except BrokenPipeError:  # `experiment-runner export ID | head`: the reader left; stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug: say so in one line unless asked for the traceback
            if os.environ.get("EXPERIMENT_RUNNER_DEBUG"):
                raise
            click.echo(f"Error: internal error: {type(exc).__name__}: {exc} (set EXPERIMENT_RUNNER_DEBUG=1 for details)", err=True)
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    envvar="EXPERIMENT_RUNNER_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="SQLite file of the store (env EXPERIMENT_RUNNER_DB); created on first use.",
)
@click.version_option(__version__, prog_name="experiment-runner")
@click.pass_context
def cli(ctx: click.Context, db: str) -> None:
    """Replay stored conversations against a model, annotate problem spans with an evaluator, export metrics.

    Start with `experiment-runner demo`, or import your own conversations:

        experiment-runner import conversations.jsonl
    """
    ctx.obj = Context(db)


def main() -> None:
    """Console-script entry point.

    Once the command has finished (every result committed, output flushed), the process ends with
    `os._exit`: tearing down an interpreter that has imported litellm takes about 2 s of CPU that no
    user waits for on purpose (module finalisers, thread-pool joins); nothing is left to clean up.
    """
    try:
        cli(prog_name="experiment-runner")
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # the reader left (`... | head`): nothing more can be said
        pass
    os._exit(code)


def _exit_status(code: object) -> int:
    """The status `sys.exit(code)` would give: None is 0, an int itself, anything else printed and 1."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1
