"""`score A --against B`: how far two experiments' spans on the same replies agree (B is the reference).

Items are paired by source conversation. A pair is scored when both final replies have the same parts
(two re-evaluations of one experiment share the very same reply) and both have a completed evaluation
of it. The scores are `score --gold`'s (`span_scores.score_spans`, B's spans as gold) plus Cohen's
kappa per character (`agreement.char_kappa`). A part's characters are its text (text and reasoning
parts) or the compact JSON of its arguments (tool calls).
"""

import json
from typing import cast

from sqlalchemy import Connection

from experiment_runner.conversation import Part
from experiment_runner.evaluation.spans import part_target
from experiment_runner.results.agreement import CharKappa, Reply, char_kappa
from experiment_runner.results.gold import item_spans
from experiment_runner.results.span_scores import GoldScores, LabelledSpan, score_spans
from experiment_runner.store import Store
from experiment_runner.store.queries import results as q
from experiment_runner.store.queries.experiments import require_experiment

Sides = dict[str, tuple[list[Part] | None, list[LabelledSpan] | None]]
"""Per source conversation: the final reply's parts and its spans (None when not evaluated)."""


class AgainstScores(GoldScores):
    """`score --against`: `score --gold`'s shape with B as the gold, and character-level kappa."""

    against: str
    only_in_experiment: int
    kappa: CharKappa


def part_lengths(parts: list[Part]) -> list[int]:
    """The number of characters a span can cover in each part."""
    return [len(part_target(p, None) or "") if p.get("type") in ("text", "reasoning", "tool_call") else 0 for p in parts]


def _side(conn: Connection, experiment_id: str) -> "Sides":
    """Per source conversation: the final reply's parts (decoded) and its spans (None when not evaluated)."""
    rows = q.reply_items(conn, experiment_id)
    spans = item_spans(conn, [r.id for r in rows])
    return {
        r.source: (json.loads(r.reply_parts) if r.reply_parts else None, spans.get((r.id, r.message_id)))
        for r in rows
    }


def _pairs(a: Sides, b: Sides, counts: dict[str, int]) -> list[Reply]:
    """(part lengths, A's spans, B's spans) of each scorable reply, counting what is skipped and why."""
    pairs: list[Reply] = []
    for source in sorted(b):
        if source not in a:
            counts["gold_without_item"] += 1
            continue
        (parts_a, spans_a), (parts_b, spans_b) = a[source], b[source]
        if spans_a is None or spans_b is None:
            counts["skipped_not_evaluated"] += 1
        elif parts_a != parts_b:
            counts["skipped_reply_differs"] += 1
        else:
            counts["scored"] += 1
            pairs.append((part_lengths(cast(list[Part], parts_a)), spans_a, spans_b))
    return pairs


def score_against(store: Store, experiment_id: str, reference_id: str) -> "AgainstScores":
    """Span P/R/F1 of A's spans with B's as the reference (`score --gold`'s shape) and character-level kappa.

    `gold_without_item` counts B's items with no item in A; `only_in_experiment` A's items with none in B."""
    counts = dict.fromkeys(("scored", "skipped_reply_differs", "skipped_not_evaluated", "gold_without_item"), 0)
    with store.read() as session:
        require_experiment(session, experiment_id)
        require_experiment(session, reference_id)
        conn = session.connection()
        a, b = _side(conn, experiment_id), _side(conn, reference_id)
    pairs = _pairs(a, b, counts)
    return cast(AgainstScores, {
        "experiment_id": experiment_id,
        "against": reference_id,
        **counts,
        "only_in_experiment": len(a.keys() - b.keys()),
        **score_spans((spans_a, spans_b) for _, spans_a, spans_b in pairs),
        "kappa": char_kappa(pairs),
    })
