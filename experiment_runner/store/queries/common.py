"""Shared query pieces: the chunked `IN (...)` loop, stored JSON, message rows, two reused subqueries."""

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, TextClause, bindparam, text

from experiment_runner import jsonlimits
from experiment_runner.conversation import Message

IN_CHUNK = 500  # values per IN (...) statement: far below SQLite's bound-variable limit (999 before 3.32)

# A scalar subquery over an outer `item i`: the id of the item's latest evaluation (newest, then highest id).
LATEST_EVALUATION = (
    "(SELECT le.id FROM evaluation le WHERE le.item_id = i.id ORDER BY le.created_at DESC, le.id DESC LIMIT 1)"
)

# A scalar subquery over an outer `item i`: the id of the final assistant message of the item's result.
FINAL_ASSISTANT_MESSAGE = (
    "(SELECT fm.id FROM message fm WHERE fm.conversation_id = i.result_conversation_id AND fm.role = 'assistant'"
    " ORDER BY fm.sequence_number DESC LIMIT 1)"
)


def expanding(sql: str, *names: str) -> TextClause:
    """A `text()` statement whose named parameters `names` each take a list (`IN :ids`)."""
    return text(sql).bindparams(*(bindparam(name, expanding=True) for name in names))


def execute_in(
    conn: Connection,
    statement: TextClause,
    name: str,
    values: Sequence[Any],
    params: Mapping[str, Any] | None = None,
    size: int = IN_CHUNK,
) -> list[Row[Any]]:
    """Run `statement` once per chunk of `values` (bound to the list parameter `name`); all rows, in order."""
    rows: list[Row[Any]] = []
    for start in range(0, len(values), size):
        result = conn.execute(statement, {**(params or {}), name: list(values[start : start + size])})
        if result.returns_rows:
            rows.extend(result.all())
    return rows


def encode_json(value: Any) -> str | None:
    """A value as stored in a JSON column (None stays NULL)."""
    return None if value is None else jsonlimits.dumps(value, ensure_ascii=False)  # never a bare NaN in a JSON column


def decode_json(value: str | None) -> Any:
    """A JSON column's value decoded (NULL is None)."""
    return None if value is None else jsonlimits.loads_stored(value)


def message_dict(row: Any) -> Message:
    """A message row (`id, role, parts, sequence_number, generation`) in the export's (native) shape."""
    return {
        "id": row.id,
        "role": row.role,
        "parts": jsonlimits.loads_stored(row.parts),
        "sequence_number": row.sequence_number,
        "generation": decode_json(row.generation),
    }
