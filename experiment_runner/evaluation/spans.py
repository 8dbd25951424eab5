"""Span alignment: turn an evaluator's quoted text into exact character offsets in a message.

An evaluator model reads an assistant message and returns labelled quotes of problematic
text. Quotes drift from the source (whitespace, case, curly quotes, dashes), so each quote is
located in the message with a tiered matcher and reported as end-exclusive Python string
offsets into the *target string* of one message part:

* ``text`` / ``reasoning`` parts: ``part["content"]``.
* ``tool_call`` parts with a ``parameter_name``: ``arguments[parameter_name]``, as-is when it is
  a ``str``, otherwise as compact JSON (``separators=(",", ":")``, ``ensure_ascii=False``).
* ``tool_call`` parts without a ``parameter_name``: compact JSON of the whole ``arguments``.
* other parts (e.g. ``tool_call_response``) have no target; quotes naming them can only be
  found through the fallback below.

Matching tiers, first hit wins (a later tier is tried only when an earlier one finds nothing):

1. Exact substring. The span is exactly the quote, whitespace included.
2. Normalised: any whitespace run (spaces, newlines, tabs, NBSP, ...) equals any other run,
   case is ignored (per-character ``str.lower``), curly/prime/guillemet quotes equal ``'`` or
   ``"``, and all dashes equal ``-``. Each normalised character remembers its original range,
   so the span maps back exactly even when lowercasing changes length (``'İ'.lower()`` is two
   characters). An inner whitespace run maps to the whole original run; the quote's own leading
   and trailing whitespace covers as many characters of the original run there as the quote has
   (at most the run, taken next to the text): target ``"a  foo\\nb"`` and quote ``" foo "``
   give ``" foo\\n"`` (offsets 2..7), the characters one leading and one trailing space stand for.
3. Whitespace-blind: as tier 2 but whitespace is removed on both sides (quote ``"foo, bar"``
   finds ``"foo,bar"``). The span runs from the first to the last matched non-space character,
   so the quote's own leading/trailing whitespace is not covered. This tier can match across
   word boundaries (``"the rapist"`` finds ``"therapist"``); it is the last resort.

Edge-case decisions:

* Among the occurrences of a quote, one that starts and ends at word boundaries (where the
  quote itself starts/ends with a letter or digit) is preferred, so a case-insensitive "MMA"
  finds the word, not the letters inside "dilemma".
* Repeated quotes: an occurrence is "taken" when an earlier span with the same label in the
  same target (same part index and parameter) has exactly the same offsets. The first
  occurrence not taken wins; if all are taken, the first occurrence. Overlapping occurrences
  count (``"aa"`` occurs at 0, 1 and 2 in ``"aaaa"``).
* Fallback: if the quote is not in the named part (or the index is out of range, or the part
  has no target), the text and reasoning parts are tried in index order and the first match
  is used with its actual index; such spans have ``tool_name``/``parameter_name`` None.
* A ``tool_call`` quote naming a parameter the call does not have is dropped at once (tool
  arguments are not expected in text parts). ``parameter_name`` is ignored for other parts.
* A ``tool_call`` whose ``arguments`` is a JSON string is decoded first; if it is not a JSON
  object, only a quote without ``parameter_name`` can match it (against the raw string).
* Dropped: empty or whitespace-only quotes, out-of-range indexes with no fallback match,
  missing parameters, and quotes found nowhere. Each drop carries a short reason.
* Canonically equivalent Unicode forms (composed vs decomposed accents) are not unified.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

from experiment_runner import jsonlimits
from experiment_runner.conversation import DropReason, Part, ToolCallPart

TEXT_PART_TYPES = ("text", "reasoning")

_CHAR_FOLDS: dict[str, str] = {
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032`\u00b4", "'"),  # ‘ ’ ‚ ‛ ′ ` ´
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'),  # “ ” „ ‟ ″ « »
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),  # ‐ ‑ ‒ – — ― −
}


@dataclass(frozen=True)
class Quote:
    """One labelled quote as returned by the evaluator model."""

    label: str
    text: str
    explanation: str | None = None
    message_part_index: int = 0
    tool_name: str | None = None
    parameter_name: str | None = None


@dataclass(frozen=True)
class Span:
    """A quote aligned to ``target[start_offset:end_offset]`` of one message part."""

    label: str
    text: str  # target[start_offset:end_offset], as it appears in the message
    explanation: str | None
    message_part_index: int
    start_offset: int
    end_offset: int
    tool_name: str | None
    parameter_name: str | None


@dataclass(frozen=True)
class Dropped:
    """A quote that could not be aligned, with a short human-readable reason."""

    quote: Quote
    reason: str
    kind: DropReason = "quote_not_found"


def compact_json(value: Any) -> str:
    """JSON without spaces and with non-ASCII kept, as used for non-string tool arguments."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def part_target(part: Part, parameter_name: str | None) -> str | None:
    """The string a quote's offsets index into for this part, or None if it has none."""
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind in TEXT_PART_TYPES:
        content = part.get("content")
        return content if isinstance(content, str) else None
    if kind != "tool_call":
        return None
    arguments = part.get("arguments")
    if isinstance(arguments, str):
        try:
            decoded = jsonlimits.loads(arguments)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict):
            return arguments if parameter_name is None else None
        arguments = decoded
    if parameter_name is None:
        return compact_json(arguments) if arguments is not None else None
    if not isinstance(arguments, dict) or parameter_name not in arguments:
        return None
    value = arguments[parameter_name]
    return value if isinstance(value, str) else compact_json(value)


@dataclass(frozen=True)
class _Folded:
    """A normalised string plus, per normalised character, its original [start, end) range."""

    text: str
    starts: list[int]
    ends: list[int]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Map a normalised [start, end) range back to original offsets."""
        return self.starts[start], self.ends[end - 1]


def _fold(text: str, keep_space: bool) -> _Folded:
    """Normalise ``text`` (tier 2 if ``keep_space``, else tier 3) keeping an index map."""
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            j = i + 1
            while j < n and text[j].isspace():
                j += 1
            if keep_space:
                chars.append(" ")
                starts.append(i)
                ends.append(j)
            i = j
            continue
        for folded in _CHAR_FOLDS.get(ch) or ch.lower():
            chars.append(folded)
            starts.append(i)
            ends.append(i + 1)
        i += 1
    return _Folded("".join(chars), starts, ends)


class _Target:
    """A target string with its normalised forms, built lazily and at most once."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def spaced(self) -> _Folded:
        return _fold(self.text, keep_space=True)

    @cached_property
    def unspaced(self) -> _Folded:
        return _fold(self.text, keep_space=False)


def _occurrences(
    haystack: str,
    needle: str,
    to_span: Callable[[int, int], tuple[int, int]],
    taken: set[tuple[int, int]],
    whole_word: Callable[[tuple[int, int]], bool],
) -> tuple[tuple[int, int] | None, tuple[int, int] | None, tuple[int, int] | None]:
    """(first free whole-word occurrence, first free occurrence, first occurrence), each or None."""
    first = free = None
    pos = haystack.find(needle)
    while pos != -1:
        span = to_span(pos, pos + len(needle))
        if span not in taken:
            if whole_word(span):
                return span, free or span, first or span
            free = free or span
        first = first or span
        pos = haystack.find(needle, pos + 1)
    return None, free, first


def _edges(text: str, quote: str) -> Callable[[tuple[int, int]], bool]:
    """Whether a span of `text` starts and ends at word boundaries where the quote does."""
    starts_word, ends_word = quote[:1].isalnum(), quote[-1:].isalnum()

    def whole_word(span: tuple[int, int]) -> bool:
        start, end = span
        before = starts_word and start > 0 and text[start - 1].isalnum()
        after = ends_word and end < len(text) and text[end].isalnum()
        return not (before or after)

    return whole_word


def _keep_edge_whitespace(text: str, quote: str, span: tuple[int, int]) -> tuple[int, int]:
    """Trim a normalised match's outer whitespace runs to as many characters as the quote has there."""
    start, end = span
    lead = len(quote) - len(quote.lstrip())
    run = 0
    while start + run < end and text[start + run].isspace():
        run += 1
    start += max(0, run - lead) if lead else 0
    trail = len(quote) - len(quote.rstrip())
    run = 0
    while end - run > start and text[end - run - 1].isspace():
        run += 1
    end -= max(0, run - trail) if trail else 0
    return start, end


def _match(target: _Target, quote: str, taken: set[tuple[int, int]]) -> tuple[int, int] | None:
    """Run the three tiers on a prepared target.

    Preference: a free whole-word occurrence (tier 1, then 2, then 3), then any free occurrence in tier
    order, then the first occurrence of the first tier that matched at all.
    """
    if not quote.strip():
        return None
    whole_word = _edges(target.text, quote)
    spaced, unspaced = target.spaced, target.unspaced

    def spaced_span(start: int, end: int) -> tuple[int, int]:
        return _keep_edge_whitespace(target.text, quote, spaced.original_span(start, end))

    tiers = [(target.text, quote, lambda s, e: (s, e))]
    tiers += [(spaced.text, _fold(quote, keep_space=True).text, spaced_span)]
    tiers += [(unspaced.text, _fold(quote, keep_space=False).text, unspaced.original_span)]
    found = [_occurrences(hay, needle, to_span, taken, whole_word) for hay, needle, to_span in tiers if needle]
    for rank in range(3):
        for candidates in found:
            if candidates[rank] is not None:
                return candidates[rank]
    return None


def find_quote(
    target: str, quote: str, taken: Sequence[tuple[int, int]] = ()
) -> tuple[int, int] | None:
    """End-exclusive (start, end) of ``quote`` in ``target`` using the matching tiers, or None.

    Occurrences whose span is in ``taken`` are skipped unless every occurrence is taken.
    """
    return _match(_Target(target), quote, set(taken))


def _part_type(part: Any) -> Any:
    return part.get("type") if isinstance(part, dict) else None


def align_quotes(parts: Sequence[Part], quotes: Sequence[Quote]) -> tuple[list[Span], list[Dropped]]:
    """Align every quote to the message ``parts``; returns spans and drops, each in input order."""
    targets: dict[str, _Target] = {}
    taken: dict[tuple[str, int, str | None], set[tuple[int, int]]] = {}
    spans: list[Span] = []
    dropped: list[Dropped] = []

    def prepared(text: str) -> _Target:
        if text not in targets:
            targets[text] = _Target(text)
        return targets[text]

    seen: set[tuple[str, int, str | None, int, int]] = set()
    for quote in quotes:
        result = _align_one(parts, quote, prepared, taken)
        if isinstance(result, Dropped):
            dropped.append(result)
            continue
        key = (result.label, result.message_part_index, result.parameter_name, result.start_offset, result.end_offset)
        if key in seen:  # the same label on the same characters twice: stored once
            dropped.append(Dropped(quote, "duplicate of an earlier annotation", "duplicate"))
            continue
        seen.add(key)
        spans.append(result)
    return spans, dropped


def _align_one(
    parts: Sequence[Part],
    quote: Quote,
    prepared: Callable[[str], _Target],
    taken: dict[tuple[str, int, str | None], set[tuple[int, int]]],
) -> Span | Dropped:
    """Align one quote: the named part first, then the text/reasoning parts in order."""
    if not quote.text.strip():
        return Dropped(quote, "empty quote", "empty_quote")
    named = quote.message_part_index
    candidates: list[tuple[int, str | None]] = []  # (part index, parameter name)
    kind: DropReason = "quote_not_found"
    reason = "quote not found in the message"
    if 0 <= named < len(parts):
        is_tool_call = _part_type(parts[named]) == "tool_call"
        parameter = quote.parameter_name if is_tool_call else None
        if parameter is not None and part_target(parts[named], parameter) is None:
            return Dropped(quote, f"tool call has no parameter {parameter!r}", "no_such_parameter")
        candidates.append((named, parameter))
    else:  # no usable part index: every part is searched, tool-call arguments included
        reason, kind = f"part index {named} out of range", "part_index_out_of_range"
        candidates += [
            (i, name) for i, part in enumerate(parts) if _part_type(part) == "tool_call" for name in (cast(ToolCallPart, part).get("arguments") or {})
        ]
    candidates += [
        (i, None) for i, part in enumerate(parts) if i != named and _part_type(part) in TEXT_PART_TYPES
    ]

    for index, parameter in candidates:
        part = parts[index]
        target = part_target(part, parameter)
        if target is None:
            continue
        used = taken.setdefault((quote.label, index, parameter), set())
        found = _match(prepared(target), quote.text, used)
        if found is None:
            continue
        used.add(found)
        is_tool_call = _part_type(part) == "tool_call"
        return Span(
            label=quote.label,
            text=target[found[0] : found[1]],
            explanation=quote.explanation,
            message_part_index=index,
            start_offset=found[0],
            end_offset=found[1],
            tool_name=cast(ToolCallPart, part).get("name") if is_tool_call else None,
            parameter_name=parameter,
        )
    return Dropped(quote, reason, kind)
