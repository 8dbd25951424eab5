"""Files the user names: reading a JSON file (`--labels`, `--output-schema`) and writing one atomically.

`write_text_atomic` is the one way this package writes an output file (the export, the HTML report): a
temp file beside the target, written, flushed and fsynced, then renamed over the target, and the folder
fsynced, so a reader sees the old file or the whole new one, never a part, even after a crash.

Only a regular file (or nothing yet) is ever replaced: a symlink is followed and its target written
(the link stays a link), and a FIFO, a device, a socket or a directory is refused, since renaming over
them would cut off a reader or replace a device node (`check_output_path`).
"""

import json
import os
import stat
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from experiment_runner import jsonlimits
from experiment_runner.errors import BadInputError, InputLimitError


def read_json_file(path: str | Path, what: str) -> Any:
    """The decoded JSON of `path` (within `jsonlimits`); `BadInputError` naming the file (as a `what` file) otherwise."""
    try:
        return jsonlimits.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such {what} file") from None
    except jsonlimits.JSONLimitError as exc:
        raise InputLimitError(f"{path}:{exc.lineno or 1}: {exc}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable JSON file ({exc})") from None


def check_output_path(path: Path) -> Path:
    """The file a write to `path` replaces: `path` itself or, for a symlink, its final target (which may not exist
    yet). `BadInputError` (loc `output`) `PATH is not a regular file` for a FIFO, device, socket or directory."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}", loc=("output",)) from None
    if not stat.S_ISREG(mode):
        raise BadInputError(f"{path} is not a regular file", loc=("output",))
    return target


def write_text_atomic(path: Path, chunks: Iterable[str]) -> None:
    """Write the chunks (UTF-8) to `path` (a symlink's target) atomically, keeping an existing file's permissions;
    `BadInputError` (loc `output`) if it is not a regular file or cannot be written. Nothing is read from
    `chunks` before the path is checked."""
    target = check_output_path(path)
    if not target.parent.is_dir():
        raise BadInputError(f"cannot write {path}: folder {target.parent} does not exist", loc=("output",))
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "w", encoding="utf-8") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if target.exists():
            os.chmod(temp, stat.S_IMODE(target.stat().st_mode))
        os.replace(temp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror or exc}", loc=("output",)) from None
    finally:
        temp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable where the platform allows it (not on Windows, which cannot open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
