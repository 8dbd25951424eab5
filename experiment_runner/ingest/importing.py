"""`import`: read conversation files (JSONL or a JSON array, native or OpenAI chat, or OTLP traces) into the store.

Every file is parsed and checked before anything is written, and all of them are written in one
transaction, so a bad line (reported with its file and line number) leaves the store unchanged.
Re-importing an id with the same content stores nothing; with other content it is an error.
"""

import json
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Connection

from experiment_runner.errors import BadInputError
from experiment_runner.ingest.conversations import message_id_for
from experiment_runner.ingest.formats import MAX_DEPTH, content_hash, normalize_conversation
from experiment_runner.ingest.otlp import conversations_from_requests, is_otlp
from experiment_runner.store import Store
from experiment_runner.store.ids import new_id
from experiment_runner.store.queries import conversations as q
from experiment_runner.store.timeutil import now


@dataclass(frozen=True)
class Parsed:
    """One conversation read from a file, normalised to the native shape."""

    source: str  # "file:line" for messages
    id: str
    messages: list[dict[str, Any]]
    hash: str
    loc: tuple[str | int, ...] = ()  # where a request body holds it (`("body", 2)`), for the API's errors


@dataclass
class ImportResult:
    """What an import did: every id it saw in input order, which were new, and the trace spans read and skipped."""

    ids: list[str] = field(default_factory=list)
    new: int = 0
    unchanged: int = 0
    spans: int = 0
    skipped_spans: int = 0


@dataclass
class Source:
    """What one input holds: its conversations, and the OTLP spans read and skipped (not inference spans)."""

    conversations: list[Parsed] = field(default_factory=list)
    spans: int = 0
    skipped_spans: int = 0


def read_source(name: str, stdin: TextIO | None = None, *, each_span: bool = False) -> Source:
    """Parse one file (`-` for stdin) into native conversations; `BadInputError` names file and line."""
    label = "<stdin>" if name == "-" else name
    if name == "-":
        text = (stdin or sys.stdin).read()
    else:
        path = Path(name)
        if not path.is_file():
            raise BadInputError(f"{name}: no such file" if not path.exists() else f"{name}: not a file")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BadInputError(f"{name}: not UTF-8 text ({exc.reason})") from None
    source = parse_text(text, label, each_span=each_span)
    if not source.conversations and not source.spans:
        raise BadInputError(f"{label}:1: no conversations in {label}")
    return source


def parse_text(text: str, label: str, *, each_span: bool = False) -> Source:
    """Parse JSONL, a JSON array, or one OTLP/JSON object: conversations and OTLP trace requests alike."""
    return parse_objects(_objects(text, label), each_span=each_span)


def _objects(text: str, label: str) -> list[tuple[Any, str]]:
    """The JSON values of a file with where each starts ("file:line")."""
    stripped = text.lstrip()
    if stripped.startswith("["):  # parsed incrementally: linear however large, nesting bounded
        lines = _numbered(_split_lines(iter([text.encode("utf-8", "surrogatepass")])))
        return [(obj, f"{label}:{lineno}") for lineno, obj in _array_elements(lines, label)]
    if stripped.startswith("{") and "\n" in stripped.rstrip():
        try:
            whole = json.loads(text)  # one pretty-printed OTLP request (a .json file)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":  # not JSONL either: report where the JSON breaks
                raise BadInputError(f"{label}:{exc.lineno}: invalid JSON ({exc.msg})") from None
            whole = None
        if is_otlp(whole):
            first_line = text.count("\n", 0, len(text) - len(stripped)) + 1
            return [(whole, f"{label}:{first_line}")]
    objects = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            objects.append((json.loads(line), f"{label}:{lineno}"))
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{label}:{lineno}: invalid JSON ({exc.msg})") from None
        except RecursionError:
            raise BadInputError(f"{label}:{lineno}: nested deeper than {MAX_DEPTH} levels") from None
    return objects


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
    each element's first event is known and nesting past `MAX_DEPTH` stops the parse at once."""
    import ijson  # only array imports need it

    events = ijson.sendable_list()
    parser = ijson.basic_parse_coro(events, use_float=True)
    builder = _Builder()
    lineno = 1
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
        reason = str(exc).splitlines()[0].removeprefix("b'").removeprefix("parse error: ").removeprefix("lexical error: ")
        raise BadInputError(f"{label}:{lineno}: invalid JSON ({reason.strip() or 'incomplete'})") from None
    except OverflowError:
        raise BadInputError(f"{label}:{lineno}: nested deeper than {MAX_DEPTH} levels") from None
    if builder.open:
        raise BadInputError(f"{label}:{lineno}: invalid JSON (the array is not closed)")


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
                raise OverflowError
            self.stack.append({} if event == "start_map" else [])
            self.keys.append(None)
            return None
        if event in ("end_map", "end_array"):
            self.keys.pop()
            value = self.stack.pop()
            if not self.stack:
                self.open = False
                return None
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


def parse_objects(objects: Iterable[tuple[Any, str]], *, each_span: bool = False, loc: str | None = None) -> Source:
    """Conversation objects parsed one by one; OTLP requests (detected by shape) gathered, then grouped.

    With `loc` (a request body's name), errors about the i-th object carry `loc=(loc, i)`."""
    source = Source()
    traces = []
    for index, (obj, where) in enumerate(objects):
        if is_otlp(obj):
            traces.append((obj, where))
        else:
            source.conversations.append(_parse_one(obj, where, loc=(loc, index) if loc else ()))
    if traces:
        try:
            found = conversations_from_requests(traces, each_span=each_span)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
        source.conversations += [_parse_one(c.conversation, c.where, keep_unknown_parts=True) for c in found.conversations]
        source.spans, source.skipped_spans = found.spans, found.skipped
    return source


def _parse_one(obj: Any, where: str, *, keep_unknown_parts: bool = False, loc: tuple[str | int, ...] = ()) -> Parsed:
    try:
        conv = normalize_conversation(obj, keep_unknown_parts=keep_unknown_parts)
    except ValueError as exc:
        raise BadInputError(f"{where}: {exc}", loc=loc) from None
    return Parsed(where, conv["id"] or new_id(), conv["messages"], content_hash(conv["messages"]), loc)


def import_files(store: Store, names: Iterable[str], stdin: TextIO | None = None, *, otlp_each_span: bool = False) -> ImportResult:
    """Import every named file (`-` = stdin) in one transaction; nothing is stored if any input is bad.

    `otlp_each_span` makes every inference span of a trace file its own conversation (id `<trace>-<span>`)."""
    return _store_all(store, [read_source(name, stdin, each_span=otlp_each_span) for name in names])


def import_conversations(store: Store, objects: list[Any], label: str = "body") -> ImportResult:
    """Import already-decoded conversation objects (the REST API's body) with the same rules."""
    return _store_all(store, [parse_objects(((obj, f"{label}[{i}]") for i, obj in enumerate(objects)), loc=label)])


def import_traces(store: Store, request: Any, label: str = "body") -> ImportResult:
    """Import one decoded OTLP `ExportTraceServiceRequest` (`POST /v1/traces`) with the import rules."""
    if not is_otlp(request):
        raise BadInputError(f"{label}: not an OTLP ExportTraceServiceRequest (no 'resourceSpans')")
    return _store_all(store, [parse_objects([(request, label)])])


def _store_all(store: Store, sources: list[Source]) -> ImportResult:
    """Check every conversation (duplicates in the input included), then write the new ones at once."""
    parsed: dict[str, Parsed] = {}
    result = ImportResult(spans=sum(s.spans for s in sources), skipped_spans=sum(s.skipped_spans for s in sources))
    for conv in (conv for source in sources for conv in source.conversations):
        seen = parsed.get(conv.id)
        if seen is not None and seen.hash != conv.hash:
            raise BadInputError(f"{conv.source}: conversation {conv.id!r} differs from the one at {seen.source}", loc=conv.loc)
        parsed.setdefault(conv.id, conv)
        result.ids.append(conv.id)
    with store.write() as session:
        conn = session.connection()
        new = _new_conversations(conn, list(parsed.values()))
        _insert(conn, new)
    result.new = len(new)
    result.unchanged = len(parsed) - len(new)
    return result


def _new_conversations(conn: Connection, convs: list[Parsed]) -> list[Parsed]:
    """The conversations not stored yet; an id stored with other content is an error."""
    stored = q.stored_conversations(conn, [c.id for c in convs])
    new = []
    for conv in convs:
        if conv.id not in stored:
            new.append(conv)
        elif stored[conv.id] != (conv.hash, "source"):
            raise BadInputError(f"{conv.source}: conversation {conv.id!r} is already stored with different content", loc=conv.loc)
    _check_message_ids(conn, new)
    return new


def _check_message_ids(conn: Connection, convs: list[Parsed]) -> None:
    """Explicit message ids must be unique: not repeated in the input, not already stored."""
    given = {m["id"]: c for c in convs for m in c.messages if "id" in m}
    if sum("id" in m for c in convs for m in c.messages) != len(given):
        raise BadInputError("the input gives the same message id to more than one message")
    taken = q.taken_message_ids(conn, list(given))
    if taken:
        raise BadInputError(f"{given[taken[0]].source}: message id {taken[0]!r} is already stored in another conversation", loc=given[taken[0]].loc)


def _insert(conn: Connection, convs: list[Parsed]) -> None:
    """Bulk-insert conversations and their messages (executemany, not a commit per row)."""
    created = now()
    q.insert_conversations(
        conn, [{"id": c.id, "type": "source", "content_hash": c.hash, "created_at": created} for c in convs]
    )
    q.insert_messages(
        conn,
        [
            {
                "id": m.get("id") or message_id_for(c.id, seq),
                "conversation_id": c.id,
                "sequence_number": seq,
                "role": m["role"],
                "parts": m["parts"],
                "generation": m["generation"],
            }
            for c in convs
            for seq, m in enumerate(c.messages)
        ],
    )
