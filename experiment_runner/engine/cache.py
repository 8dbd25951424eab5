"""The response cache: a model call whose exact request was answered before is answered from the store.

The key (`cache_key`) is a SHA-256 over the model, the endpoint (api_base), the messages and every
generation setting the call sends (tools, response_format, max_tokens, reasoning, ...): anything that can
change the reply. `engine.llm.complete` asks `ResponseCache.lookup` before it calls and hands every
successful reply to `remember`; a failed call raises before that, and a reply cut off at max_tokens is
never kept. A hit makes no call: its generation keeps the original tokens and latency, costs $0 in this
run (`cost_usd: 0`) and says what it saved (`cache_hit: true`, `cost_saved_usd`).

A run asks the store whether it holds any of a model's replies; while it holds none, lookups read only what
this run stored itself (up to `TRACKED` keys), and the question is asked again at most every `RECHECK_SECONDS`,
so a reply another process stores (another worker of the same run, say) serves within that time: a model's
first run in one process makes no query per call, and a duplicate request is still asked once.

Writes during a run go through the run's single writer: `take_writes()` hands it the new entries, the hits
to count and the entries to drop, which it commits in the same transaction as the events that follow the
calls (a worker adds its entry before it sends its reply's event, so a stored reply never lacks its entry).
Outside a run (`cache stats|clear`) writes are single `Store.write()` transactions.

A reply the caller cannot use (a reply the output schema refuses, an evaluator answer that cannot be
read) is `forget`-ten: dropped from the cache, and not served again in this run, so asking once more samples anew.
"""

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import anyio
from sqlalchemy import Connection

from experiment_runner.conversation import Generation, JSONObject, OpenAIMessage, Part
from experiment_runner.engine.llm import Completion
from experiment_runner.errors import BadInputError
from experiment_runner.store import Store
from experiment_runner.store.queries import cache as q
from experiment_runner.store.queries.common import encode_json
from experiment_runner.store.queries.rows import CacheEntryRow, CacheHitRow
from experiment_runner.store.timeutil import now

logger = logging.getLogger(__name__)

# Arguments that do not change the reply: how the call is made, not what is asked.
NOT_IN_KEY = frozenset({"api_key", "api_base", "timeout", "num_retries", "metadata", "extra_headers"})
KEY_VERSION = 1
TRACKED = 100_000  # keys a run remembers storing; past that, every lookup reads the store again
RECHECK_SECONDS = 0.5  # how old "the store holds no reply of this model" may be before it is asked again


def cache_enabled() -> bool:
    """Whether runs read the cache by default: yes, unless EXPERIMENT_RUNNER_NO_CACHE is 1/true/yes."""
    return os.environ.get("EXPERIMENT_RUNNER_NO_CACHE", "").strip().lower() not in ("1", "true", "yes", "on")


def cache_key(model: str, api_base: str | None, messages: list[OpenAIMessage], settings: JSONObject) -> str:
    """The cache key of a chat request: model, endpoint, messages and generation settings, canonically hashed."""
    payload = {
        "v": KEY_VERSION,
        "model": model,
        "api_base": (api_base or "").rstrip("/") or None,
        "messages": messages,
        "settings": {k: v for k, v in settings.items() if k not in NOT_IN_KEY},
    }
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def cacheable(completion: Completion) -> bool:
    """Whether a reply may be kept: not cut off at max_tokens."""
    return "length" not in (completion.generation.get("finish_reasons") or [])


def as_hit(key: str, parts: list[Part], generation: Generation, duration_ms: float) -> Completion:
    """A stored reply served as a hit: original tokens and latency, $0 now, the original cost as saved."""
    saved = generation.get("cost_usd")
    recorded: Generation = {**generation, "cost_usd": 0.0, "cache_hit": True, "cost_saved_usd": saved if isinstance(saved, int | float) else None}
    return Completion(parts, recorded, 0, duration_ms, cache_key=key)


@dataclass
class CacheUsage:
    """What the cache did in one run: calls it answered, the USD those calls cost when first made, replies it kept."""

    hits: int = 0
    saved_usd: float = 0.0
    stored: int = 0


@dataclass
class CacheWrites:
    """What the writer commits for the cache: new entries, hits to count, entries to drop."""

    entries: list[CacheEntryRow] = field(default_factory=list)
    hits: list[CacheHitRow] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.entries or self.hits or self.dropped)

    def apply(self, conn: Connection) -> None:
        """Run the statements inside the caller's transaction."""
        q.drop_entries(conn, self.dropped)
        q.put_entries(conn, self.entries)
        q.count_hits(conn, self.hits)


class ResponseCache:
    """One run's view of the cache: lookups read the store (and this run's unwritten entries); writes queue up.

    `read=False` (`--no-cache`) never answers from the cache but still stores each reply, refreshing its entry."""

    def __init__(self, store: Store, *, read: bool = True, usage: CacheUsage | None = None):
        self.store = store
        self.read = read
        self.usage = usage if usage is not None else CacheUsage()
        self._pending = CacheWrites()
        self._unwritten: dict[str, Completion] = {}
        self._forgotten: set[str] = set()
        self._stored: set[str] | None = set()  # keys this run stored (None: too many to track)
        self._empty_since: dict[str, float] = {}  # models the store held no reply of, when it last said so
        self._holding: set[str] = set()  # models the store holds replies of
        self._asking = anyio.Lock()

    def key(self, model: str, api_base: str | None, messages: list[OpenAIMessage], settings: JSONObject) -> str:
        return cache_key(model, api_base, messages, settings)

    async def lookup(self, key: str, model: str) -> Completion | None:
        """The stored reply for `key` (a request to `model`) as a hit, or None (also when reading is off or the
        key was forgotten)."""
        if not self.read or key in self._forgotten:
            return None
        unwritten = self._unwritten.get(key)
        if unwritten is not None:
            hit = as_hit(key, unwritten.parts, unwritten.generation, unwritten.duration_ms)
        else:
            if not await self._may_hold(key, model):
                return None
            row = await anyio.to_thread.run_sync(self._read, key)
            if row is None:
                return None
            hit = as_hit(key, json.loads(row.parts), json.loads(row.generation), float(row.duration_ms))
        self.usage.hits += 1
        self.usage.saved_usd += hit.generation["cost_saved_usd"] or 0.0
        self._pending.hits.append({"key": key, "stamp": now()})
        return hit

    async def _may_hold(self, key: str, model: str) -> bool:
        """Whether the store may hold `key`: it holds replies of the model (it did not, less than `RECHECK_SECONDS`
        ago), or this run stored the key (or stored too many to remember)."""
        if self._stored is None or key in self._stored or model in self._holding:
            return True
        if not self._stale(model):
            return False
        async with self._asking:  # the first calls of a run come together: one query per model
            if model not in self._holding and self._stale(model):
                asked = time.monotonic()
                if await anyio.to_thread.run_sync(self._has_entries, model):
                    self._holding.add(model)
                else:
                    self._empty_since[model] = asked
        return model in self._holding

    def _stale(self, model: str) -> bool:
        """Whether "the store holds no reply of `model`" is unknown or older than `RECHECK_SECONDS`."""
        return time.monotonic() - self._empty_since.get(model, -math.inf) > RECHECK_SECONDS

    def _has_entries(self, model: str) -> bool:
        with self.store.read() as session:
            return q.has_entries(session.connection(), model)

    def _read(self, key: str) -> Any:
        with self.store.read() as session:
            return q.get_entry(session.connection(), key)

    def remember(self, key: str, completion: Completion, model: str, api_base: str | None) -> Completion:
        """Queue a fresh reply for the store (unless it was cut off); returns it tagged with its key."""
        tagged = replace(completion, cache_key=key)
        if not cacheable(completion):
            return tagged
        self._forgotten.discard(key)
        self._unwritten[key] = tagged
        self._pending.entries = [e for e in self._pending.entries if e["key"] != key]
        self._pending.entries.append(entry_row(key, completion, model, api_base))
        self.usage.stored += 1
        return tagged

    def forget(self, completion: Completion) -> None:
        """The caller could not use this reply: drop its entry, and answer its key only with a new call in this run."""
        key = completion.cache_key
        if key is None:
            return
        self._forgotten.add(key)
        self._unwritten.pop(key, None)
        self._pending.entries = [e for e in self._pending.entries if e["key"] != key]
        self._pending.dropped.append(key)

    def take_writes(self) -> CacheWrites | None:
        """What the writer should commit now (None when nothing is queued); the queue starts empty again."""
        if not self._pending:
            return None
        writes, self._pending = self._pending, CacheWrites()
        for entry in writes.entries:
            self._unwritten.pop(entry["key"], None)
        if self._stored is not None:
            self._stored.update(entry["key"] for entry in writes.entries)
            if len(self._stored) > TRACKED:
                self._stored = None
        return writes


def entry_row(key: str, completion: Completion, model: str, api_base: str | None) -> CacheEntryRow:
    """The `response_cache` row of a fresh reply."""
    cost = completion.generation.get("cost_usd")
    return {
        "key": key, "model": model, "api_base": api_base, "parts": encode_json(completion.parts),
        "generation": encode_json(completion.generation), "duration_ms": completion.duration_ms,
        "cost_usd": cost if isinstance(cost, int | float) else None, "created_at": now(),
    }


class ModelCacheStats(TypedDict):
    model: str
    entries: int
    hits: int
    saved_usd: float
    size_bytes: int
    oldest: str
    newest: str


class CacheStatsDict(TypedDict):
    """`cache stats --json`: the totals, and per model."""

    entries: int
    hits: int
    saved_usd: float
    size_bytes: int
    per_model: list[ModelCacheStats]


@dataclass(frozen=True)
class CacheStats:
    """`cache stats`: per model and in total."""

    per_model: list[ModelCacheStats]

    @property
    def entries(self) -> int:
        return sum(m["entries"] for m in self.per_model)

    def as_dict(self) -> CacheStatsDict:
        return {
            "entries": self.entries,
            "hits": sum(m["hits"] for m in self.per_model),
            "saved_usd": round(sum(m["saved_usd"] for m in self.per_model), 8),
            "size_bytes": sum(m["size_bytes"] for m in self.per_model),
            "per_model": self.per_model,
        }


def cache_stats(store: Store) -> CacheStats:
    """How many replies the cache holds, per model, with their hits and what those hits saved."""
    with store.read() as session:
        rows = q.stats(session.connection())
    return CacheStats([
        {"model": r.model, "entries": r.entries, "hits": r.hits, "saved_usd": round(float(r.saved_usd), 8),
         "size_bytes": r.size, "oldest": r.oldest, "newest": r.newest}
        for r in rows
    ])


def clear_cache(store: Store, older_than_days: float | None = None) -> int:
    """Delete every cached reply, or those stored more than `older_than_days` days ago; returns how many."""
    before = None
    if older_than_days is not None:
        if older_than_days < 0:
            raise BadInputError("--older-than must be 0 or more days")
        before = (datetime.now(UTC) - timedelta(days=older_than_days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with store.write() as session:
        removed = q.clear(session.connection(), before)
    logger.info("cache cleared: %d entries (before %s)", removed, before)
    return removed
