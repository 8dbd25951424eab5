"""The reads behind the web UI: an experiment's items filtered by status and label, conversation search,
the experiments a live list polls.

Item filters are applied in SQL (with the item's latest evaluation, as the metrics use it), so a page of
matching items costs one indexed scan however many items an experiment has. Pages are keysets on the
item position; conversation search pages by offset (a listing, not a walk that must see every row once).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, text

from experiment_runner.store.queries.common import LATEST_EVALUATION, Dialect, PerDialect, execute_in, expanding


@dataclass(frozen=True)
class ItemConditions:
    """Which items match: item status, latest evaluation status, a label among its annotations, issues or none."""

    status: str | None = None
    evaluation_status: str | None = None
    label: str | None = None
    has_issues: bool | None = None

    def params(self) -> dict[str, str | bool | None]:
        issues = self.has_issues
        return {"status": self.status, "evaluation_status": self.evaluation_status, "label": self.label, "issues": issues}


_MATCHING = f"""
    FROM item i LEFT JOIN evaluation e ON e.id = {LATEST_EVALUATION}
    WHERE i.experiment_id = :experiment
      AND (CAST(:status AS TEXT) IS NULL OR i.status = :status)
      AND (CAST(:evaluation_status AS TEXT) IS NULL OR e.status = :evaluation_status)
      AND (CAST(:label AS TEXT) IS NULL OR (e.status = 'completed'
           AND EXISTS (SELECT 1 FROM annotation a WHERE a.evaluation_id = e.id AND a.label = :label)))
      AND (CAST(:issues AS BOOLEAN) IS NULL OR (e.status = 'completed'
           AND EXISTS (SELECT 1 FROM annotation a WHERE a.evaluation_id = e.id) = :issues))
"""

_FILTERED_ITEMS = text(
    f"""
    SELECT i.id, i.position, i.status, i.error_message, i.evaluations_expected, i.created_at, i.updated_at,
           i.source_conversation_id, i.result_conversation_id,
           (SELECT count(*) FROM evaluation ce WHERE ce.item_id = i.id AND ce.status = 'completed') AS received
    {_MATCHING} AND i.position > :after
    ORDER BY i.position LIMIT :limit
    """
)

_FILTERED_COUNT = text(f"SELECT count(*) {_MATCHING}")

_LATEST_EVALUATIONS = expanding(
    """
    SELECT e.id, e.item_id, e.message_id, e.status, e.model, e.input_tokens, e.output_tokens, e.detection_duration_ms,
           e.total_duration_ms, e.error_message
    FROM evaluation e
    WHERE e.item_id IN :items
      AND e.id = (SELECT le.id FROM evaluation le WHERE le.item_id = e.item_id ORDER BY le.created_at DESC, le.id DESC LIMIT 1)
    """,
    "items",
)



def _search(d: Dialect) -> str:
    return f"""
    SELECT c.id, c.created_at, {d.insertion_order('c')} AS inserted,
           (SELECT count(*) FROM message m WHERE m.conversation_id = c.id) AS n,
           (SELECT parts FROM message m WHERE m.conversation_id = c.id AND m.role = 'user'
               ORDER BY sequence_number LIMIT 1) AS first_user_parts
    FROM conversation c
    WHERE c.type = 'source'
      AND (CAST(:pattern AS TEXT) IS NULL OR c.id {d.like} :pattern ESCAPE '\\'
           OR EXISTS (SELECT 1 FROM message m WHERE m.conversation_id = c.id AND CAST(m.parts AS TEXT) {d.like} :pattern ESCAPE '\\'))
"""


_SEARCH_PAGE = PerDialect(lambda d: text(_search(d) + " ORDER BY c.created_at, inserted LIMIT :limit OFFSET :offset"))
_SEARCH_COUNT = PerDialect(lambda d: text(f"SELECT count(*) FROM ({_search(d)}) AS found"))

_USED_BY = text(
    """
    SELECT x.id, x.name, x.model, x.created_at, i.status, i.position
    FROM item i JOIN experiment x ON x.id = i.experiment_id
    WHERE i.source_conversation_id = :conversation
    ORDER BY x.created_at DESC, x.id
    """
)

_OPEN_OR_NEWER = text(
    """
    SELECT x.id FROM experiment x
    WHERE x.created_at > :since
       OR EXISTS (SELECT 1 FROM item i WHERE i.experiment_id = x.id AND i.status IN ('pending', 'in_progress'))
    ORDER BY x.created_at DESC, x.id DESC LIMIT :limit
    """
)


def open_or_newer_experiments(conn: Connection, since: str, limit: int) -> list[str]:
    """Ids of the experiments created after `since` (a stored or exported time) or with items pending or in
    progress, newest first: what a live list must look at (a run started, resumed or going since it loaded)."""
    return list(conn.execute(_OPEN_OR_NEWER, {"since": since, "limit": limit}).scalars())


def filtered_items(conn: Connection, experiment_id: str, where: ItemConditions, after: int, limit: int) -> list[Row[Any]]:
    """Up to `limit` matching items after position `after`, with the columns of `results.item_rows`."""
    params = {"experiment": experiment_id, "after": after, "limit": limit, **where.params()}
    return list(conn.execute(_FILTERED_ITEMS, params).all())


def count_filtered_items(conn: Connection, experiment_id: str, where: ItemConditions) -> int:
    """How many of the experiment's items match."""
    return int(conn.execute(_FILTERED_COUNT, {"experiment": experiment_id, **where.params()}).scalar_one())


def latest_evaluations(conn: Connection, item_ids: Sequence[str]) -> list[Row[Any]]:
    """The latest evaluation of each named item (the export's evaluation columns, plus `item_id`)."""
    return execute_in(conn, _LATEST_EVALUATIONS, "items", item_ids)


def like_pattern(words: str) -> str:
    """A LIKE pattern (with `\\` as escape) that finds `words` anywhere, `%` and `_` taken literally."""
    escaped = words.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_conversations(conn: Connection, pattern: str | None, limit: int, offset: int) -> list[Row[Any]]:
    """Source conversations whose id or message text matches the LIKE `pattern` (all with None), in import order."""
    return list(conn.execute(_SEARCH_PAGE.on(conn), {"pattern": pattern, "limit": limit, "offset": offset}).all())


def count_conversations(conn: Connection, pattern: str | None) -> int:
    """How many source conversations `search_conversations` would list in all."""
    return int(conn.execute(_SEARCH_COUNT.on(conn), {"pattern": pattern}).scalar_one())


def experiments_using(conn: Connection, conversation_id: str) -> list[Row[Any]]:
    """The experiments with an item on this source conversation (`id, name, model, created_at`, the item's `status, position`)."""
    return list(conn.execute(_USED_BY, {"conversation": conversation_id}).all())
