"""Files the user names: reading a JSON file (`--labels`, `--output-schema`) and writing one atomically.

`write_text_atomic` is the one way this package writes an output file (the export, the HTML report): a
temp file beside the target, written, flushed and fsynced, then renamed over the target, and the folder
fsynced, so a reader sees the old file or the whole new one, never a part, even after a crash.
"""

import json
import os
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


def write_text_atomic(path: Path, chunks: Iterable[str]) -> None:
    """Write the chunks (UTF-8) to `path` atomically; `BadInputError` (loc `output`) if it cannot be written."""
    if not path.parent.is_dir():
        raise BadInputError(f"cannot write {path}: folder {path.parent} does not exist", loc=("output",))
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with open(fd, "w", encoding="utf-8") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
        _fsync_dir(path.parent)
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
