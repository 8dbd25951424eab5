"""`import`: read conversation files (JSONL or a JSON array, native or OpenAI chat, or OTLP traces) into the store.

Every file is parsed and checked before anything is written, and all of them are written in one
transaction, so a bad line (reported with its file and line number) leaves the store unchanged.
Re-importing an id with the same content stores nothing; with other content it is an error. A
conversation without an id gets one from its content (`content_id`), so importing the same file again
stores nothing. The same id twice in the input (same content) is counted once, as a duplicate.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from sqlalchemy import Connection

from experiment_runner.conversation import JSONObject, Message, ToolDefinition, content_hash
from experiment_runner.errors import BadInputError, InputLimitError
from experiment_runner.ingest.conversations import message_id_for
from experiment_runner.ingest.formats import normalize_conversation
from experiment_runner.ingest.otlp import conversations_from_requests, is_otlp
from experiment_runner.ingest.reading import file_values, json_values
from experiment_runner.jsonlimits import JSONLimitError
from experiment_runner.store import Store
from experiment_runner.store.queries import conversations as q
from experiment_runner.store.timeutil import now

CONTENT_NAMESPACE = uuid.UUID("5b0e4c1a-2f3d-4e6b-9c8a-7d1e0f2a3b4c")


@dataclass(frozen=True)
class Parsed:
    """One conversation read from a file, normalised to the native shape."""

    source: str  # "file:line" for messages
    id: str
    messages: list[Message]
    hash: str
    tools: list[ToolDefinition] | None = None
    metadata: JSONObject | None = None
    loc: tuple[str | int, ...] = ()  # where a request body holds it (`("body", 2)`), for the API's errors


@dataclass
class ImportResult:
    """What an import did: every id it saw in input order (`new + unchanged + duplicates == len(ids)`),
    and the trace spans read and skipped."""

    ids: list[str] = field(default_factory=list)
    new: int = 0
    unchanged: int = 0
    duplicates: int = 0  # conversations the input repeats (same id, same content): stored or counted once
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
    source = parse_objects(file_values(name, stdin), each_span=each_span)
    if not source.conversations and not source.spans:
        raise BadInputError(f"{label}:1: no conversations in {label}")
    return source


def parse_text(text: str, label: str, *, each_span: bool = False) -> Source:
    """Parse JSONL, a JSON array, or one OTLP/JSON object: conversations and OTLP trace requests alike."""
    return parse_objects(json_values(text, label), each_span=each_span)


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
        except JSONLimitError as exc:
            raise InputLimitError(str(exc)) from None
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
        source.conversations += [_parse_one(c.conversation, c.where, keep_unknown_parts=True) for c in found.conversations]
        source.spans, source.skipped_spans = found.spans, found.skipped
    return source


def _parse_one(obj: Any, where: str, *, keep_unknown_parts: bool = False, loc: tuple[str | int, ...] = ()) -> Parsed:
    try:
        conv = normalize_conversation(obj, keep_unknown_parts=keep_unknown_parts)
    except JSONLimitError as exc:
        raise InputLimitError(f"{where}: {exc}") from None
    except ValueError as exc:
        raise BadInputError(f"{where}: {exc}", loc=loc) from None
    tools, metadata = conv.get("tools"), conv.get("metadata")
    digest = content_hash(conv["messages"], tools, metadata)
    return Parsed(where, conv["id"] or content_id(digest), conv["messages"], digest, tools, metadata, loc)


def content_id(digest: str) -> str:
    """The id of a conversation given without one: a UUID (version 5) of its content hash (same content, same id)."""
    return str(uuid.uuid5(CONTENT_NAMESPACE, digest))


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
        result.duplicates += seen is not None
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
        conn,
        [
            {"id": c.id, "type": "source", "content_hash": c.hash, "created_at": created, "tools": c.tools, "metadata": c.metadata}
            for c in convs
        ],
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
