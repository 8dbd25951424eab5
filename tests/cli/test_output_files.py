"""`export -o` and `report -o` (issue 21, item 5): only a regular file is ever replaced, atomically; a symlink's
target is written; a FIFO, a device or a directory is refused; `-o -` is stdout."""

import json
import os
import stat
import threading
from pathlib import Path

import pytest

COMMANDS = {"export": lambda e: ["export", e], "report": lambda e: ["report", e]}


def check_written(command: str, path: Path, experiment_id: str) -> None:
    text = path.read_text(encoding="utf-8")
    if command == "export":
        assert json.loads(text)["experiment"]["id"] == experiment_id
    else:
        assert text.startswith("<!DOCTYPE html>") and experiment_id in text


@pytest.mark.parametrize("command", COMMANDS)
def test_a_symlink_is_followed_to_its_target(run_cli, tmp_path: Path, experiment_id: str, command: str) -> None:
    target = tmp_path / "real" / "out.data"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link"
    link.symlink_to(target)
    result = run_cli(*COMMANDS[command](experiment_id), "-o", link)
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link stays a link
    check_written(command, target, experiment_id)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the file keeps its permissions
    assert sorted(os.listdir(target.parent)) == ["out.data"]  # no temp file left beside it
    # a link to a file that does not exist yet creates the file
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "real" / "new.data")
    assert run_cli(*COMMANDS[command](experiment_id), "-o", dangling).exit_code == 0
    check_written(command, tmp_path / "real" / "new.data", experiment_id)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_fifo_is_refused_and_left_alone(run_cli, tmp_path: Path, experiment_id: str, command: str) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = run_cli(*COMMANDS[command](experiment_id), "-o", fifo)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {fifo} is not a regular file\n")
    assert stat.S_ISFIFO(fifo.stat().st_mode) and sorted(os.listdir(tmp_path)) == ["pipe", "store.db"]
    # and so is a symlink to one
    link = tmp_path / "to-pipe"
    link.symlink_to(fifo)
    result = run_cli(*COMMANDS[command](experiment_id), "-o", link)
    assert (result.exit_code, result.stderr) == (2, f"Error: {link} is not a regular file\n")
    assert link.is_symlink() and stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_device_or_a_directory_is_refused(run_cli, tmp_path: Path, experiment_id: str, command: str) -> None:
    for path in (Path("/dev/null"), tmp_path):
        result = run_cli(*COMMANDS[command](experiment_id), "-o", path)
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {path} is not a regular file\n")
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)


def test_dash_writes_to_stdout(run_cli, experiment_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    export = run_cli("export", experiment_id, "-o", "-")
    assert export.exit_code == 0 and json.loads(export.stdout)["experiment"]["id"] == experiment_id
    report = run_cli("report", experiment_id, "-o", "-")
    assert report.exit_code == 0 and report.stdout.startswith("<!DOCTYPE html>") and report.stdout.rstrip().endswith("</html>")
    assert sorted(os.listdir(tmp_path)) == ["store.db"]  # no file named "-"


def test_a_reader_of_the_target_sees_the_old_file_or_the_whole_new_one(run_cli, tmp_path: Path, experiment_id: str) -> None:
    out = tmp_path / "export.json"
    out.write_text(json.dumps({"old": True}))
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(out.read_text(encoding="utf-8"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            assert run_cli("export", experiment_id, "-o", out).exit_code == 0
    finally:
        stop.set()
        reader.join()
    assert seen and all(json.loads(text) for text in seen)  # never a part of a file
