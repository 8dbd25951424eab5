"""Conversations and their messages: imported sources, listings, loading, and inserting new rows."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, text

from experiment_runner.conversation import Conversation, Message, ToolDefinition
from experiment_runner.errors import NotFoundError
from experiment_runner.store.queries.common import PerDialect, decode_json, encode_json, execute_in, expanding, message_dict
from experiment_runner.store.queries.rows import ConversationRow, MessageRow

_CONVERSATION = text("SELECT id, type, tools, metadata FROM conversation WHERE id = :id")

_MESSAGES = text(
    "SELECT id, role, parts, sequence_number, generation FROM message WHERE conversation_id = :id ORDER BY sequence_number"
)

_MESSAGES_IN = expanding(
    "SELECT conversation_id, id, role, parts, sequence_number, generation FROM message"
    " WHERE conversation_id IN :ids ORDER BY conversation_id, sequence_number",
    "ids",
)

_WITH_MESSAGES = expanding(
    """
    SELECT c.id AS conversation_id, c.type, c.tools, c.metadata, m.id, m.role, m.parts, m.sequence_number, m.generation
    FROM conversation c LEFT JOIN message m ON m.conversation_id = c.id
    WHERE c.id IN :ids ORDER BY c.id, m.sequence_number
    """,
    "ids",
)

_SOURCES_AMONG = expanding("SELECT id FROM conversation WHERE id IN :ids AND type = 'source'", "ids")

_SOURCE_IDS = PerDialect(lambda d: text(f"SELECT id FROM conversation c WHERE type = 'source' ORDER BY created_at, {d.insertion_order('c')}"))

_STORED = expanding("SELECT id, content_hash, type FROM conversation WHERE id IN :ids", "ids")

_TAKEN_MESSAGE_IDS = expanding("SELECT id FROM message WHERE id IN :ids", "ids")

_LISTING = PerDialect(
    lambda d: text(
        f"""
    SELECT c.id, c.created_at,
           (SELECT count(*) FROM message m WHERE m.conversation_id = c.id) AS n,
           (SELECT {d.joined('role', ' ', 'sequence_number')} FROM
               (SELECT role, sequence_number FROM message m WHERE m.conversation_id = c.id ORDER BY sequence_number) AS r) AS roles,
           (SELECT parts FROM message m WHERE m.conversation_id = c.id AND m.role = 'user'
               ORDER BY sequence_number LIMIT 1) AS first_user_parts
    FROM conversation c WHERE c.type = 'source'
    ORDER BY c.created_at, {d.insertion_order('c')}
    LIMIT :limit
    """
    )
)
NO_LIMIT = 2**62  # a LIMIT both dialects take for "all rows"

_INSERT_CONVERSATION = text(
    "INSERT INTO conversation (id, type, content_hash, created_at, experiment_id, tools, metadata)"
    " VALUES (:id, :type, :content_hash, :created_at, :experiment_id, :tools, :metadata)"
)

_TOOLS_IN = expanding("SELECT id, tools FROM conversation WHERE id IN :ids AND tools IS NOT NULL", "ids")

_INSERT_MESSAGE = text(
    "INSERT INTO message (id, conversation_id, sequence_number, role, parts, generation)"
    " VALUES (:id, :conversation_id, :sequence_number, :role, :parts, :generation)"
)


def _head(row: Any, conversation_id: str) -> Conversation:
    """A conversation's own fields in the export's shape: `id`, `type`, then `tools`/`metadata` when it has them."""
    head: Conversation = {"id": conversation_id, "type": row.type, "messages": []}
    if (tools := decode_json(row.tools)) is not None:
        head["tools"] = tools
    if (metadata := decode_json(row.metadata)) is not None:
        head["metadata"] = metadata
    return head


def conversation(conn: Connection, conversation_id: str) -> Conversation | None:
    """A conversation in the export's shape (`{"id", "type", "messages", "tools"?, "metadata"?}`), or None."""
    row = conn.execute(_CONVERSATION, {"id": conversation_id}).first()
    if row is None:
        return None
    conv = _head(row, row.id)
    conv["messages"] = [message_dict(m) for m in conn.execute(_MESSAGES, {"id": conversation_id})]
    return conv


def require_conversation(conn: Connection, conversation_id: str) -> Conversation:
    """A stored conversation in the export's shape, or `NotFoundError`."""
    found = conversation(conn, conversation_id)
    if found is None:
        raise NotFoundError(f"no conversation with id {conversation_id!r}")
    return found


def conversations(conn: Connection, ids: Sequence[str]) -> dict[str, Conversation]:
    """The named conversations (those that exist) in the export's shape, by id."""
    found: dict[str, Conversation] = {}
    for row in execute_in(conn, _WITH_MESSAGES, "ids", ids):
        conv = found.get(row.conversation_id)
        if conv is None:
            conv = found[row.conversation_id] = _head(row, row.conversation_id)
        if row.id is not None:
            conv["messages"].append(message_dict(row))
    return found


def tools_by_conversation(conn: Connection, ids: Sequence[str]) -> dict[str, list[ToolDefinition]]:
    """The stored tool definitions of the named conversations that have them, by id."""
    return {row.id: decode_json(row.tools) for row in execute_in(conn, _TOOLS_IN, "ids", ids)}


def messages_by_conversation(conn: Connection, ids: Sequence[str]) -> dict[str, list[Message]]:
    """The messages of each named conversation (native dicts in sequence order); `[]` for one without any."""
    found: dict[str, list[Message]] = {i: [] for i in ids}
    for row in execute_in(conn, _MESSAGES_IN, "ids", ids):
        found[row.conversation_id].append(message_dict(row))
    return found


def source_ids_among(conn: Connection, ids: Sequence[str]) -> set[str]:
    """The ids among `ids` that name a stored source conversation."""
    return {row.id for row in execute_in(conn, _SOURCES_AMONG, "ids", ids)}


def missing_sources(conn: Connection, ids: list[str]) -> list[str]:
    """The ids among `ids` that name no stored source conversation, in the given order."""
    found = source_ids_among(conn, ids)
    return [i for i in ids if i not in found]


def source_conversation_ids(conn: Connection) -> list[str]:
    """Every imported conversation id, in import order."""
    return list(conn.execute(_SOURCE_IDS.on(conn)).scalars())


def stored_conversations(conn: Connection, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """`{id: (content_hash, type)}` of the named conversations already stored."""
    return {row.id: (row.content_hash, row.type) for row in execute_in(conn, _STORED, "ids", ids)}


def taken_message_ids(conn: Connection, ids: Sequence[str]) -> list[str]:
    """The ids among `ids` that a stored message already has."""
    return [row.id for row in execute_in(conn, _TAKEN_MESSAGE_IDS, "ids", ids)]


def conversation_listing(conn: Connection, limit: int | None) -> list[Row[Any]]:
    """Source conversations in import order: id, created_at, message count `n`, `roles`, `first_user_parts`."""
    return list(conn.execute(_LISTING.on(conn), {"limit": NO_LIMIT if limit is None else limit}).all())


def insert_conversations(conn: Connection, rows: list[ConversationRow]) -> None:
    """Insert conversations (`id, type, content_hash, created_at`; `experiment_id` for results; `tools` and
    `metadata` as values for sources that have them) in one executemany."""
    if rows:
        conn.execute(
            _INSERT_CONVERSATION,
            [
                {"experiment_id": None, **row, "tools": encode_json(row.get("tools")), "metadata": encode_json(row.get("metadata"))}
                for row in rows
            ],
        )


def insert_messages(conn: Connection, rows: list[MessageRow]) -> None:
    """Insert messages (`id, conversation_id, sequence_number, role, parts, generation`; JSON as values)."""
    if rows:
        conn.execute(
            _INSERT_MESSAGE,
            [{**row, "parts": encode_json(row["parts"]), "generation": encode_json(row["generation"])} for row in rows],
        )
