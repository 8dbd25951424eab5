"""The `experiment-runner` command line: a thin layer that parses options, calls the core, prints.

Errors raised by the core (`ExperimentRunnerError`) become one `Error: ...` line on stderr and the
error's exit status here, in one place; nothing the user can get wrong prints a traceback.

`--db` is taken before the command and after it (every command gets the option added): a file path, or a
`postgresql://user:pass@host:port/db` URL. Only the commands of `CREATES_STORE` create a missing store (a
file, or the tables in an empty database); the others say `no store at PATH` (exit 2) and create nothing. The store is closed when the command ends, which checkpoints its WAL.
"""

import gc
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from experiment_runner import __version__, logconfig
from experiment_runner.errors import BadInputError, ExperimentRunnerError, NotFoundError
from experiment_runner.store import DEFAULT_DB, Store, open_store, shown_location

# The commands that may create the store file; every other one needs it to exist.
CREATES_STORE = frozenset({"import", "run", "serve", "view", "demo"})


class Context:
    """What every command gets: the database path, and the store opened on first use (closed at the end)."""

    def __init__(self, db: str, *, may_create: bool = True):
        self.db = db
        self.may_create = may_create
        self._store: Store | None = None
        # How this command's errors name the inputs they are about; a command may set its own (see `resume`).
        self.field_names: Callable[[str], str] = option_for

    @property
    def store(self) -> Store:
        """The store, created if missing when this command may create it."""
        return self._open(create=self.may_create)

    @property
    def existing_store(self) -> Store:
        """The store; `StoreError` (exit 2) `no store at PATH` when the file does not exist, and nothing is created."""
        return self._open(create=False)

    def _open(self, *, create: bool) -> Store:
        if self._store is None:
            self._store = open_store(self.db, create=create)
        return self._store

    def experiment_id(self, given: str) -> str:
        """The full id of the experiment `given` names: itself, or a unique prefix of at least 4 characters (as in git)."""
        from experiment_runner.results.catalog import resolve_experiment_id

        return resolve_experiment_id(self.store, given)

    def close(self) -> None:
        """Close the store if it was opened (checkpointing the WAL if this command wrote)."""
        if self._store is not None:
            self._store.close()
            self._store = None


# Which module defines each command. A command's module is imported only when that command runs (or
# help lists it), so `list` does not pay for the engine, `run` not for the server, and so on.
COMMAND_MODULES = {
    "import": "conversations", "conversations": "conversations",
    "run": "runs", "resume": "runs", "reevaluate": "runs",
    "list": "results", "show": "results", "export": "results", "delete": "results", "score": "results",
    "report": "reporting", "compare": "reporting", "serve": "serving", "demo": "demo", "gate": "gating",
    "view": "viewing", "cache": "caching", "worker": "workers",
}

# The option that sets each request-body field whose CLI spelling is not `--` + the field with dashes.
OPTION_FOR_FIELD = {
    "max_cost_usd": "--max-cost", "conversation_ids": "--conversation", "system_prompt_override": "--system-prompt",
    "reasoning_config": "--reasoning-effort",
}


def option_for(field: str) -> str:
    """How the CLI spells an input a core error names (`api_base` -> `--api-base`)."""
    return OPTION_FOR_FIELD.get(field, "--" + field.replace("_", "-"))


def error_line(exc: ExperimentRunnerError, field_names: Callable[[str], str] = option_for) -> str:
    """The one `Error: ...` line for one of our errors, inputs named by `field_names` (their options)."""
    return f"Error: {exc.render(field_names) if isinstance(exc, BadInputError) else exc}"


DB_HELP = ("The store: a SQLite file, or postgresql://user:pass@host:port/db (env EXPERIMENT_RUNNER_DB), before or after the command;"
           " import, run, serve, view and demo create it.")


def _set_db(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`--db` after the command: it replaces the one given before (or the default)."""
    obj = ctx.find_object(Context)
    if value is not None and obj is not None:
        obj.db = value


def _db_after_command() -> click.Option:
    # Eager, so it is set before any other parameter of the command is processed.
    return click.Option(["--db"], metavar="PATH|URL", expose_value=False, is_eager=True, callback=_set_db, help=DB_HELP)


class Group(click.Group):
    """A click group that loads command modules lazily, gives every command `--db`, and reports our errors as
    `Error: ...` with the error's exit status."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(param.name == "db" for param in cmd.params):
            cmd.params.append(_db_after_command())
        super().add_command(cmd, name)

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
            obj = ctx.obj if isinstance(ctx.obj, Context) else None
            where = f" in store {shown_location(obj.db)}" if isinstance(exc, NotFoundError) and obj else ""
            click.echo(f"{error_line(exc, obj.field_names if obj else option_for)}{where}", err=True)
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
@click.option("--db", envvar="EXPERIMENT_RUNNER_DB", default=DEFAULT_DB, show_default=True, metavar="PATH|URL", help=DB_HELP)
@click.option("-v", "--verbose", is_flag=True, envvar="EXPERIMENT_RUNNER_VERBOSE",
              help="Log retries, structured-output fallbacks and lease takeovers on stderr (env EXPERIMENT_RUNNER_VERBOSE=1).")
@click.version_option(__version__, prog_name="experiment-runner")
@click.pass_context
def cli(ctx: click.Context, db: str, verbose: bool) -> None:
    """Replay stored conversations against a model, annotate problem spans with an evaluator, export metrics.

    Start with `experiment-runner demo`, or import your own conversations:

    \b
        experiment-runner import conversations.jsonl
    """
    gc.enable()  # off while the modules loaded (`experiment_runner.console`)
    logconfig.configure(verbose)
    ctx.obj = Context(db, may_create=ctx.invoked_subcommand in CREATES_STORE)
    ctx.call_on_close(ctx.obj.close)


def main(args: list[str] | None = None) -> NoReturn:
    """Console-script entry point (`args`: the command line, else `sys.argv`; a forked worker of `run --workers`).

    Once the command has finished (every result committed, output flushed), the process ends with
    `os._exit`: tearing down an interpreter that has imported litellm takes about 2 s of CPU that no
    user waits for on purpose (module finalisers, thread-pool joins); nothing is left to clean up.
    """
    try:
        cli(args=args, prog_name="experiment-runner")
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
