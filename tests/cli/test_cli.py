"""The command line as a whole: help for every command, the module entry point, error lines."""

import sqlite3
import subprocess
import sys

import click
import pytest

from experiment_runner.cli import cli


def all_commands() -> list[str]:
    return cli.list_commands(click.Context(cli))  # commands load lazily: ask the group, not its dict


def test_the_command_list_is_complete() -> None:
    assert all_commands() == sorted(
        ["cache", "compare", "conversations", "delete", "demo", "export", "gate", "import", "list", "reevaluate", "report", "resume", "run",
         "score", "serve", "show", "view", "worker"]
    )


@pytest.mark.parametrize("name", all_commands())
def test_every_command_has_help_with_an_example(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None and command.help and len(command.help.strip()) > 20
    assert "experiment-runner" in command.help, f"{name}: the help should show an example command"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts}: option without help"


def test_python_dash_m_runs_the_same_cli(tmp_path) -> None:
    sqlite3.connect(tmp_path / "x.db").close()  # an empty file is a store with nothing in it yet
    out = subprocess.run(
        [sys.executable, "-m", "experiment_runner", "--db", str(tmp_path / "x.db"), "conversations", "--json"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_unknown_command_is_usage_error(run_cli) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2 and "No such command" in result.output
