"""Timestamps: stored as sortable ISO 8601 UTC strings with microseconds, exported as RFC 3339 with `Z`."""

from datetime import UTC, datetime
from typing import overload


def now() -> str:
    """The current time as stored: `2026-11-24T09:30:00.123456Z` (sorts lexicographically)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@overload
def to_rfc3339(stored: str) -> str: ...
@overload
def to_rfc3339(stored: None) -> None: ...
def to_rfc3339(stored: str | None) -> str | None:
    """A stored time as exported: millisecond precision, UTC, `Z` suffix (`2026-11-24T09:30:00.123Z`)."""
    if stored is None:
        return None
    return stored[:23] + "Z"
