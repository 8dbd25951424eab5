"""The JSON values of an import file, each with where it starts ("file:line"), within the JSON limits.

JSONL (one value a line), one pretty-printed JSON document (an OTLP `.json` file, or one conversation),
a top-level JSON array (parsed incrementally through `ijson`, imported only here, so it stays linear
however large), or OTLP protobuf (`.pb`, or any file that is not UTF-8 text but decodes as one).
Every value passes `jsonlimits` (depth, numbers, no NaN/Infinity); a value past a limit raises
`InputLimitError`, any other bad input `BadInputError`, both starting with "FILE:LINE: ".
"""

import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from experiment_runner import jsonlimits
from experiment_runner.errors import BadInputError, InputLimitError
from experiment_runner.ingest.otlp_protobuf import PROTOBUF_SUFFIXES, decode_file
from experiment_runner.jsonlimits import MAX_DEPTH, JSONLimitError

Located = tuple[Any, str]  # a value and where it starts, "file:line"


def file_values(name: str, stdin: TextIO | None = None) -> list[Located]:
    """The values of one file (`-` for stdin, read as text)."""
    if name == "-":
        return json_values((stdin or sys.stdin).read(), "<stdin>")
    path = Path(name)
    if not path.is_file():
        raise BadInputError(f"{name}: no such file" if not path.exists() else f"{name}: not a file")
    data = path.read_bytes()
    if path.suffix.lower() in PROTOBUF_SUFFIXES:
        return _protobuf_values(data, name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        try:
            return _protobuf_values(data, name)
        except BadInputError:
            raise BadInputError(f"{name}: not UTF-8 text ({exc.reason}) nor an OTLP protobuf file") from None
    return json_values(text, name)


def _protobuf_values(data: bytes, name: str) -> list[Located]:
    """The requests of a protobuf trace file; where = "file:1" (binary files have no lines)."""
    try:
        requests = decode_file(data)
    except JSONLimitError as exc:
        raise InputLimitError(f"{name}:1: {exc}") from None
    except ValueError as exc:
        raise BadInputError(f"{name}:1: {exc}") from None
    return [(request, f"{name}:1") for request in requests]


def json_values(text: str, label: str) -> list[Located]:
    """The JSON values of a text with where each starts."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        lines = _numbered(_split_lines(iter([text.encode("utf-8", "surrogatepass")])))
        return [(obj, f"{label}:{lineno}") for lineno, obj in _array_elements(lines, label)]
    if stripped.startswith("{") and "\n" in stripped.rstrip() and not _is_value(stripped.split("\n", 1)[0]):
        first_line = text.count("\n", 0, len(text) - len(stripped)) + 1  # one document over several lines
        return [(_loads(text, label, first_line), f"{label}:{first_line}")]
    objects = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            objects.append((_loads(line, label, lineno), f"{label}:{lineno}"))
    return objects


def _is_value(line: str) -> bool:
    """Whether one line holds a whole JSON value (then the text is JSONL); a line past a limit counts."""
    try:
        jsonlimits.loads(line)
    except JSONLimitError:
        return True
    except json.JSONDecodeError:
        return False
    return True


def _loads(text: str, label: str, first_line: int) -> Any:
    """`jsonlimits.loads` with errors naming the file and line (`first_line` is where `text` starts)."""
    try:
        return jsonlimits.loads(text)
    except JSONLimitError as exc:
        raise InputLimitError(f"{label}:{first_line + (exc.lineno or 1) - 1}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadInputError(f"{label}:{first_line + exc.lineno - 1}: invalid JSON ({exc.msg})") from None


def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The lines of already-read text."""
    for chunk in chunks:
        yield from chunk.splitlines(keepends=True)


def _numbered(lines: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """Each piece with the number of the line it belongs to; a leading BOM dropped."""
    lineno = 1
    for index, line in enumerate(lines):
        yield lineno, (line.removeprefix(b"\xef\xbb\xbf") if index == 0 else line)
        lineno += line.endswith(b"\n")


def _array_elements(lines: Iterable[tuple[int, bytes]], label: str) -> Iterator[tuple[int, Any]]:
    """The elements of a top-level JSON array, each with the line it starts on, parsed incrementally.

    `ijson`'s C parser is fed a line at a time; its events are built into values here, so the line of
    each element's first event is known and nesting past `MAX_DEPTH` stops the parse at once. (yajl
    itself refuses NaN, Infinity and integers past 64 bits; the builder checks numbers again for
    ijson's pure-Python backend.)"""
    import ijson  # only array imports need it

    events = ijson.sendable_list()
    parser = ijson.basic_parse_coro(events, use_float=True)
    builder = _Builder()
    lineno = 1
    line = b""
    try:
        for lineno, line in lines:
            if b"\\u" in line and _has_lone_surrogate(line):
                raise BadInputError(f"{label}:{lineno}: a string holds a lone surrogate (\\ud800-\\udfff without its pair)")
            parser.send(line)
            for event, value in events:
                done = builder.add(event, value, lineno)
                if done is not None:
                    yield done
            del events[:]
        parser.close()
    except ijson.JSONError as exc:
        raise _array_error(exc, line, f"{label}:{lineno}") from None
    except JSONLimitError as exc:
        raise InputLimitError(f"{label}:{lineno}: {exc}") from None
    if builder.open:
        raise BadInputError(f"{label}:{lineno}: invalid JSON (the array is not closed)")


def _array_error(exc: Exception, line: bytes, where: str) -> BadInputError:
    """An `ijson` error as ours: a limit named as `jsonlimits` names it, else yajl's own first line."""
    reason = str(exc).splitlines()[0].removeprefix("b'").removeprefix("parse error: ").removeprefix("lexical error: ")
    if "integer overflow" in reason:
        return InputLimitError(f"{where}: an integer is out of range (integers must fit in 64 bits)")
    if "floating point" in reason:
        return InputLimitError(f"{where}: a number is too large (numbers must be finite)")
    try:
        jsonlimits.check_text(line.decode("utf-8", "replace"))  # NaN or Infinity on this line?
    except JSONLimitError as limit:
        return InputLimitError(f"{where}: {limit}")
    return BadInputError(f"{where}: invalid JSON ({reason.strip() or 'incomplete'})")


_SURROGATE_ESCAPE = re.compile(rb"\\\\|\\u[dD]([89abAB]|[c-fC-F])[0-9a-fA-F]{2}")


def _has_lone_surrogate(line: bytes) -> bool:
    """Whether the raw JSON text has a `\\uD800`-`\\uDFFF` escape that is not a high+low pair (an escaped backslash is skipped)."""
    expect_low_at = -1
    for match in _SURROGATE_ESCAPE.finditer(line):
        if match.group(0) == b"\\\\":
            if expect_low_at >= 0:
                return True
            continue
        high = match.group(1) in b"89abAB"
        if expect_low_at >= 0:
            if high or match.start() != expect_low_at:
                return True
            expect_low_at = -1
        elif high:
            expect_low_at = match.end()
        else:
            return True
    return expect_low_at >= 0


class _Builder:
    """Builds the top-level array's elements from `ijson.basic_parse` events, one element at a time."""

    def __init__(self) -> None:
        self.stack: list[Any] = []  # open containers; stack[0] is the top-level array (never filled)
        self.keys: list[str | None] = []
        self.start = 0
        self.open = True

    def add(self, event: str, value: Any, lineno: int) -> tuple[int, Any] | None:
        """Take one event; an element and its first line when the event completes one."""
        if not self.stack:
            self.stack, self.keys = [None], [None]  # the `[` that opens the array
            return None
        if len(self.stack) == 1 and event not in ("end_array", "map_key"):
            self.start = lineno
        if event == "map_key":
            self.keys[-1] = value
            return None
        if event in ("start_map", "start_array"):
            if len(self.stack) > MAX_DEPTH:
                raise JSONLimitError(jsonlimits.deeper_than())
            self.stack.append({} if event == "start_map" else [])
            self.keys.append(None)
            return None
        if event in ("end_map", "end_array"):
            self.keys.pop()
            value = self.stack.pop()
            if not self.stack:
                self.open = False
                return None
        elif event == "number":
            jsonlimits.check_value(value)
        return self._put(value)

    def _put(self, value: Any) -> tuple[int, Any] | None:
        parent = self.stack[-1]
        if len(self.stack) == 1:
            return self.start, value
        if isinstance(parent, dict):
            parent[self.keys[-1]] = value
        else:
            parent.append(value)
        return None
