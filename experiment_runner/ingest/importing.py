"""`import`: read conversation files (JSONL or a JSON array, native or OpenAI chat, or OTLP traces) into the store.

Every file is parsed and checked before anything is written, and all of them are written in one
transaction, so a bad line (reported with its file and line number) leaves the store unchanged.
Re-importing an id with the same content stores nothing; with other content it is an error.
"""

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Connection

from experiment_runner.errors import BadInputError
from experiment_runner.ingest.conversations import message_id_for
from experiment_runner.ingest.formats import content_hash, normalize_conversation
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
    return parse_text(text, label, each_span=each_span)


def parse_text(text: str, label: str, *, each_span: bool = False) -> Source:
    """Parse JSONL, a JSON array, or one OTLP/JSON object: conversations and OTLP trace requests alike."""
    return parse_objects(_objects(text, label), each_span=each_span)


def _objects(text: str, label: str) -> list[tuple[Any, str]]:
    """The JSON values of a file with where each starts ("file:line")."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            array = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{label}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        line_of = _array_lines(text, len(array))
        return [(obj, f"{label}:{line_of[index]}") for index, obj in enumerate(array)]
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
    return objects


def _array_lines(text: str, count: int) -> list[int]:
    """The line on which each element of a top-level JSON array starts (for error messages)."""
    decoder = json.JSONDecoder()
    lines, pos = [], text.index("[") + 1
    for _ in range(count):
        while text[pos] in " \t\r\n,":
            pos += 1
        lines.append(text.count("\n", 0, pos) + 1)
        _, pos = decoder.raw_decode(text, pos)
    return lines


def parse_objects(objects: Iterable[tuple[Any, str]], *, each_span: bool = False) -> Source:
    """Conversation objects parsed one by one; OTLP requests (detected by shape) gathered, then grouped."""
    source = Source()
    traces = []
    for obj, where in objects:
        if is_otlp(obj):
            traces.append((obj, where))
        else:
            source.conversations.append(_parse_one(obj, where))
    if traces:
        try:
            found = conversations_from_requests(traces, each_span=each_span)
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
        source.conversations += [_parse_one(c.conversation, c.where, keep_unknown_parts=True) for c in found.conversations]
        source.spans, source.skipped_spans = found.spans, found.skipped
    return source


def _parse_one(obj: Any, where: str, *, keep_unknown_parts: bool = False) -> Parsed:
    try:
        conv = normalize_conversation(obj, keep_unknown_parts=keep_unknown_parts)
    except ValueError as exc:
        raise BadInputError(f"{where}: {exc}") from None
    return Parsed(where, conv["id"] or new_id(), conv["messages"], content_hash(conv["messages"]))


def import_files(store: Store, names: Iterable[str], stdin: TextIO | None = None, *, otlp_each_span: bool = False) -> ImportResult:
    """Import every named file (`-` = stdin) in one transaction; nothing is stored if any input is bad.

    `otlp_each_span` makes every inference span of a trace file its own conversation (id `<trace>-<span>`)."""
    return _store_all(store, [read_source(name, stdin, each_span=otlp_each_span) for name in names])


def import_conversations(store: Store, objects: list[Any], label: str = "body") -> ImportResult:
    """Import already-decoded conversation objects (the REST API's body) with the same rules."""
    return _store_all(store, [parse_objects((obj, f"{label}[{i}]") for i, obj in enumerate(objects))])


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
            raise BadInputError(f"{conv.source}: conversation {conv.id!r} differs from the one at {seen.source}")
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
            raise BadInputError(f"{conv.source}: conversation {conv.id!r} is already stored with different content")
    _check_message_ids(conn, new)
    return new


def _check_message_ids(conn: Connection, convs: list[Parsed]) -> None:
    """Explicit message ids must be unique: not repeated in the input, not already stored."""
    given = {m["id"]: c for c in convs for m in c.messages if "id" in m}
    if sum("id" in m for c in convs for m in c.messages) != len(given):
        raise BadInputError("the input gives the same message id to more than one message")
    taken = q.taken_message_ids(conn, list(given))
    if taken:
        raise BadInputError(f"{given[taken[0]].source}: message id {taken[0]!r} is already stored in another conversation")


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
