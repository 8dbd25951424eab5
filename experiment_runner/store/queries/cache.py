"""The response cache's statements: look up, store (or refresh), count hits, drop, and sum what it saved.

Entries are keyed by `engine.cache.cache_key`; an entry is written again (replacing it) when a run samples
the same request anew (`--no-cache`). Hits are counted on the entry, so `cache stats` can say what it saved.
"""

from typing import Any

from sqlalchemy import Connection, Row, text

from experiment_runner.store.queries.common import PerDialect, execute_in, expanding
from experiment_runner.store.queries.rows import CacheEntryRow, CacheHitRow

_GET = text("SELECT key, parts, generation, duration_ms, cost_usd FROM response_cache WHERE key = :key")

_ANY_FOR_MODEL = text("SELECT 1 FROM response_cache WHERE model = :model LIMIT 1")

_UPSERT = text(
    """
    INSERT INTO response_cache (key, model, api_base, parts, generation, duration_ms, cost_usd, created_at)
    VALUES (:key, :model, :api_base, :parts, :generation, :duration_ms, :cost_usd, :created_at)
    ON CONFLICT (key) DO UPDATE SET parts = excluded.parts, generation = excluded.generation,
        duration_ms = excluded.duration_ms, cost_usd = excluded.cost_usd, created_at = excluded.created_at
    """
)

_HIT = text(
    "UPDATE response_cache SET hits = hits + 1, saved_usd = saved_usd + coalesce(cost_usd, 0), last_hit_at = :stamp WHERE key = :key"
)

_DROP = expanding("DELETE FROM response_cache WHERE key IN :keys", "keys")

_STATS = text(
    """
    SELECT model, count(*) AS entries, coalesce(sum(hits), 0) AS hits, coalesce(sum(saved_usd), 0) AS saved_usd,
           coalesce(sum(length(CAST(parts AS TEXT)) + length(CAST(generation AS TEXT))), 0) AS size, min(created_at) AS oldest, max(created_at) AS newest
    FROM response_cache GROUP BY model ORDER BY model
    """
)

_CLEAR = text("DELETE FROM response_cache WHERE CAST(:before AS TEXT) IS NULL OR created_at < :before")

# Calls of one experiment answered by the cache: its replies (result conversations it created) and its evaluations.
_TARGET_USAGE = PerDialect(
    lambda d: text(
        f"""
        SELECT count(*) AS calls, coalesce(sum({d.json_number('m.generation', 'cost_saved_usd')}), 0) AS saved
        FROM item i JOIN conversation c ON c.id = i.result_conversation_id AND c.experiment_id = i.experiment_id
        JOIN message m ON m.conversation_id = c.id
        WHERE i.experiment_id = :experiment AND {d.json_true('m.generation', 'cache_hit')}
        """
    )
)

_EVALUATOR_USAGE = text(
    """
    SELECT coalesce(sum(e.cached_calls), 0) AS calls, coalesce(sum(e.cost_saved_usd), 0) AS saved
    FROM evaluation e JOIN item i ON i.id = e.item_id WHERE i.experiment_id = :experiment
    """
)


def get_entry(conn: Connection, key: str) -> Row[Any] | None:
    """The entry for `key` (`key, parts, generation, duration_ms, cost_usd`; JSON columns as text), or None."""
    return conn.execute(_GET, {"key": key}).first()


def has_entries(conn: Connection, model: str) -> bool:
    """Whether the cache holds any reply of `model` (at any endpoint)."""
    return conn.execute(_ANY_FOR_MODEL, {"model": model}).first() is not None


def put_entries(conn: Connection, rows: list[CacheEntryRow]) -> None:
    """Store entries (every column of `_UPSERT`, JSON columns encoded), replacing any with the same key."""
    if rows:
        conn.execute(_UPSERT, rows)


def count_hits(conn: Connection, rows: list[CacheHitRow]) -> None:
    """Count a hit (`key`, `stamp`) on each entry, adding its cost to what it saved."""
    if rows:
        conn.execute(_HIT, rows)


def drop_entries(conn: Connection, keys: list[str]) -> None:
    """Delete the entries with these keys."""
    execute_in(conn, _DROP, "keys", keys)


def stats(conn: Connection) -> list[Row[Any]]:
    """Per model: entries, hits, saved_usd, size (bytes of JSON), oldest and newest `created_at`."""
    return list(conn.execute(_STATS).all())


def clear(conn: Connection, before: str | None) -> int:
    """Delete every entry (or those created before `before`, a stored timestamp); returns how many."""
    return conn.execute(_CLEAR, {"before": before}).rowcount


def experiment_usage(conn: Connection, experiment_id: str) -> dict[str, tuple[int, float]]:
    """`{"target"|"evaluator": (calls answered by the cache, USD those calls cost when first made)}`."""
    target = conn.execute(_TARGET_USAGE.on(conn), {"experiment": experiment_id}).one()
    evaluator = conn.execute(_EVALUATOR_USAGE, {"experiment": experiment_id}).one()
    return {"target": (int(target.calls), float(target.saved)), "evaluator": (int(evaluator.calls), float(evaluator.saved))}
