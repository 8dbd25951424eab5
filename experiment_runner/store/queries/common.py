"""Shared query pieces: the chunked `IN (...)` loop, stored JSON, message rows, two reused subqueries, and
the few SQL fragments that differ between SQLite and PostgreSQL (`Dialect`, `PerDialect`).

Most statements are the same text on both; a parameter that may be NULL is compared as `CAST(:p AS TEXT) IS
NULL` (PostgreSQL must know a parameter's type). A statement with a fragment of its own per dialect is a
`PerDialect`, built once per dialect from one function and picked by the connection (`.on(conn)`).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Dialect:
    """The SQL fragments that differ: JSON fields, string aggregation, insertion order, case-insensitive LIKE."""

    name: str  # sqlite | postgresql

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    def json_number(self, column: str, key: str) -> str:
        """A number inside a JSON object column (NULL when absent)."""
        return f"CAST({column} ->> '{key}' AS DOUBLE PRECISION)" if self.postgres else f"json_extract({column}, '$.{key}')"

    def json_is_number(self, column: str, key: str) -> str:
        """A condition: the JSON object column's `key` holds a number."""
        return f"json_typeof({column} -> '{key}') = 'number'" if self.postgres else f"json_type({column}, '$.{key}') IN ('integer', 'real')"

    def total(self, expression: str) -> str:
        """SQLite's `total()`: the sum as a float, 0.0 over no rows or only NULLs."""
        return f"coalesce(sum({expression}), 0.0)" if self.postgres else f"total({expression})"

    def json_true(self, column: str, key: str) -> str:
        """A condition: the JSON object column's `key` is `true`."""
        return f"({column} ->> '{key}') = 'true'" if self.postgres else f"json_extract({column}, '$.{key}') = 1"

    def joined(self, column: str, separator: str, order: str) -> str:
        """An aggregate: `column`'s values joined by `separator` in `order` (SQLite: rows must come ordered)."""
        return f"string_agg({column}, '{separator}' ORDER BY {order})" if self.postgres else f"group_concat({column}, '{separator}')"

    def insertion_order(self, alias: str) -> str:
        """Rows in the order they were inserted (a tiebreak after `created_at`): SQLite's rowid, PostgreSQL's ctid
        (the same for rows never updated, as conversations are)."""
        return f"{alias}.ctid" if self.postgres else f"{alias}.rowid"

    @property
    def like(self) -> str:
        """LIKE as SQLite means it: ASCII letters match either case."""
        return "ILIKE" if self.postgres else "LIKE"


@dataclass
class PerDialect:
    """One statement whose text depends on the dialect: built by `build` once per dialect, picked by the connection."""

    build: Callable[[Dialect], TextClause]
    _built: dict[str, TextClause] = field(default_factory=dict, init=False)

    def on(self, conn: Connection) -> TextClause:
        name = conn.dialect.name
        if name not in self._built:
            self._built[name] = self.build(Dialect(name))
        return self._built[name]


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
    """A JSON column's value decoded (NULL is None); both dialects hand JSON columns over as text."""
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
