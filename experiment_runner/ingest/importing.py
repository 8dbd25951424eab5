"""`import`: read conversation files (JSONL or a JSON array, native or OpenAI chat) into the store.

Every file is parsed and checked before anything is written, and all of them are written in one
transaction, so a bad line (reported with its file and line number) leaves the store unchanged.
Re-importing an id with the same content stores nothing; with other content it is an error.
"""

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Connection

from experiment_runner.errors import BadInputError
from experiment_runner.ingest.conversations import message_id_for
from experiment_runner.ingest.formats import content_hash, normalize_conversation
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
    """What an import did: every id it saw in input order, and which were new."""

    ids: list[str] = field(default_factory=list)
    new: int = 0
    unchanged: int = 0


def read_source(name: str, stdin: TextIO | None = None) -> Iterator[Parsed]:
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
    yield from parse_text(text, label)


def parse_text(text: str, label: str) -> Iterator[Parsed]:
    """Parse JSONL or a JSON array of conversations."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            array = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{label}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        line_of = _array_lines(text, len(array))
        for index, obj in enumerate(array):
            yield _parse_one(obj, f"{label}:{line_of[index]}")
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{label}:{lineno}: invalid JSON ({exc.msg})") from None
        yield _parse_one(obj, f"{label}:{lineno}")


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


def _parse_one(obj: Any, where: str) -> Parsed:
    try:
        conv = normalize_conversation(obj)
    except ValueError as exc:
        raise BadInputError(f"{where}: {exc}") from None
    return Parsed(where, conv["id"] or new_id(), conv["messages"], content_hash(conv["messages"]))


def import_files(store: Store, names: Iterable[str], stdin: TextIO | None = None) -> ImportResult:
    """Import every named file (`-` = stdin) in one transaction; nothing is stored if any input is bad."""
    return _store_all(store, (conv for name in names for conv in read_source(name, stdin)))


def import_conversations(store: Store, objects: list[Any], label: str = "body") -> ImportResult:
    """Import already-decoded conversation objects (the REST API's body) with the same rules."""
    return _store_all(store, (_parse_one(obj, f"{label}[{i}]") for i, obj in enumerate(objects)))


def _store_all(store: Store, convs: Iterable[Parsed]) -> ImportResult:
    """Check every conversation (duplicates in the input included), then write the new ones at once."""
    parsed: dict[str, Parsed] = {}
    result = ImportResult()
    for conv in convs:
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
