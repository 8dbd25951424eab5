"""Reading a JSON file the user named (`--labels`, `--output-schema`) with one-line errors."""

import json
from pathlib import Path
from typing import Any

from experiment_runner.errors import BadInputError


def read_json_file(path: str | Path, what: str) -> Any:
    """The decoded JSON of `path`; `BadInputError` naming the file (as a `what` file) otherwise."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable JSON file ({exc})") from None
