"""`experiment-runner view` (issue 26): the UI served on loopback, the browser opened once it answers, or a hint without one."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from experiment_runner.cli import cli


def start_view(tmp_path: Path, db: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], str]:
    """Run `view --port 0` in a process; its URL from the first stderr line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "experiment_runner", "--db", str(db), "view", "--port", "0", *args],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env={**os.environ, **env},
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    assert line.startswith("Serving the web UI on http://127.0.0.1:"), line
    return process, line.split(" on ")[1].split(" ")[0]


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    return err


def test_view_serves_the_ui_and_opens_the_browser_at_it(tmp_path, db_path) -> None:
    opened = tmp_path / "opened.txt"
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> {opened}\n')
    script.chmod(0o755)
    process, url = start_view(tmp_path, db_path, {"BROWSER": str(script)})
    try:
        deadline = time.monotonic() + 60
        while not opened.exists():
            assert time.monotonic() < deadline and process.poll() is None, "the browser was not opened"
            time.sleep(0.1)
        assert opened.read_text().split() == [url]  # opened once, at the UI, after the server answered
        page = httpx.get(url)
        assert page.status_code == 200 and "<h1>Experiments</h1>" in page.text and "No experiments yet." in page.text
    finally:
        err = stop(process)
    assert "Stopped." in err or process.returncode == 0


def test_view_without_a_browser_says_where_to_go(tmp_path, db_path) -> None:
    env = {"BROWSER": str(tmp_path / "no-such-browser"), "DISPLAY": "", "WAYLAND_DISPLAY": "", "PATH": "/nonexistent"}
    process, url = start_view(tmp_path, db_path, env)
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        lines: list[str] = []
        while not any("No browser found" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None
            lines.append(process.stderr.readline())
        assert f"No browser found to open; open {url} yourself." in "".join(lines)
        assert httpx.get(url).status_code == 200  # still serving
    finally:
        stop(process)


def test_view_has_help_and_reports_a_busy_port(run_cli, tmp_path) -> None:
    import socket

    assert "Browse experiments in the web UI" in run_cli("view", "--help").output
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        from click.testing import CliRunner

        result = CliRunner().invoke(cli, ["--db", str(tmp_path / "x.db"), "view", "--port", str(taken.getsockname()[1]), "--no-browser"])
    finally:
        taken.close()
    assert result.exit_code == 2 and result.output.startswith("Error: cannot listen on 127.0.0.1:")
