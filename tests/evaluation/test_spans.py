"""Tests for experiment_runner.evaluation.spans: the pure quote-to-offset alignment."""

import random
import re
from typing import cast

import pytest

from experiment_runner.conversation import JSONObject, Part, TextPart, ToolCallPart
from experiment_runner.evaluation.spans import Dropped, Quote, Span, align_quotes, find_quote, part_target


def text(content: str) -> TextPart:
    return {"type": "text", "content": content}


def tool_call(name: str, arguments: JSONObject, call_id: str = "call_1") -> ToolCallPart:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def span_of(target: str, quote: str) -> tuple[int, int, str]:
    """find_quote plus the covered text, so each assertion checks offsets and target[s:e]."""
    found = find_quote(target, quote)
    assert found is not None, f"{quote!r} not found in {target!r}"
    start, end = found
    return start, end, target[start:end]


# --- find_quote: the tiers ------------------------------------------------------------------


def test_exact_match():
    assert span_of("The sky is green today.", "sky is green") == (4, 16, "sky is green")


def test_exact_match_is_preferred_over_an_earlier_normalised_match():
    # "Foo" appears first only case-insensitively; the exact tier wins.
    assert span_of("Foo then foo", "foo") == (9, 12, "foo")


@pytest.mark.parametrize(
    ("target", "quote", "expected"),
    [
        ("say  hello   world now", "hello world", (5, 18, "hello   world")),
        ("say hello\nworld now", "hello world", (4, 15, "hello\nworld")),
        ("say hello world now", "hello\n world", (4, 15, "hello world")),
        ("say hello\t\tworld now", "hello world", (4, 16, "hello\t\tworld")),
        ("say hello\u00a0world now", "hello world", (4, 15, "hello\u00a0world")),
        ("say hello \r\n world now", "hello\tworld", (4, 18, "hello \r\n world")),
    ],
)
def test_whitespace_drift(target, quote, expected):
    assert span_of(target, quote) == expected


def test_case_drift():
    assert span_of("Paris is the Capital of FRANCE.", "capital of france") == (13, 30, "Capital of FRANCE")


@pytest.mark.parametrize(
    ("target", "quote", "expected"),
    [
        ("He said \u201cno way\u201d twice", 'said "no way"', (3, 16, "said \u201cno way\u201d")),
        ("it\u2019s fine", "it's fine", (0, 9, "it\u2019s fine")),
        ("it's fine", "it\u2019s fine", (0, 9, "it's fine")),
        ("\u00abBonjour\u00bb dit-il", '"bonjour"', (0, 9, "\u00abBonjour\u00bb")),
        ("a `cmd\u00b4 here", "'cmd'", (2, 7, "`cmd\u00b4")),
    ],
)
def test_quote_marks(target, quote, expected):
    assert span_of(target, quote) == expected


@pytest.mark.parametrize(
    ("target", "quote", "expected"),
    [
        ("pages 10\u201320 only", "10-20", (6, 11, "10\u201320")),
        ("wait\u2014what?", "wait-what", (0, 9, "wait\u2014what")),
        ("x - y", "x \u2014 y", (0, 5, "x - y")),
        ("minus \u22125 degrees", "-5 degrees", (6, 16, "\u22125 degrees")),
    ],
)
def test_dashes(target, quote, expected):
    assert span_of(target, quote) == expected


def test_quote_spanning_a_line_break():
    target = "First line ends here\nand the second begins."
    assert span_of(target, "ends here and the second") == (11, 35, "ends here\nand the second")


def test_quote_edge_whitespace_covers_as_many_characters_as_the_quote_has():
    # One leading and one trailing space stand for one character each, next to the text.
    assert span_of("a  foo\nb", " foo ") == (2, 7, " foo\n")
    assert span_of("a  foo\nb", "  FOO") == (1, 6, "  foo")
    assert span_of("x\n\nSarah said", " sARAH") == (2, 8, "\nSarah")  # a real annotator's choice


def test_quote_trailing_whitespace_only():
    assert span_of("foo \t bar", "FOO ") == (0, 4, "foo ")
    assert span_of("foo \t bar", "FOO   ") == (0, 6, "foo \t ")


def test_whole_words_are_preferred_over_letters_inside_words():
    assert span_of("A dilemma for MMA fans", "mma") == (14, 17, "MMA")
    assert span_of("in 260 days, not 26", "26") == (17, 19, "26")
    assert span_of("therapist", "rapist") == (3, 9, "rapist")  # no whole word: the inner match still counts


def test_whitespace_blind_tier():
    assert span_of("x foo,bar y", "foo, bar") == (2, 9, "foo,bar")
    # The quote's own outer whitespace is not covered in this tier.
    assert span_of("x foo,bar y", " Foo , BAR ") == (2, 9, "foo,bar")


def test_not_found_and_empty():
    assert find_quote("hello world", "goodbye") is None
    assert find_quote("hello world", "") is None
    assert find_quote("hello world", " \n\t") is None
    assert find_quote("", "x") is None


# --- find_quote: unicode --------------------------------------------------------------------


def test_accents():
    target = "Le caf\u00e9 est ferm\u00e9 le lundi."
    assert span_of(target, "caf\u00e9 est ferm\u00e9") == (3, 17, "caf\u00e9 est ferm\u00e9")
    assert span_of(target, "CAF\u00c9  EST") == (3, 11, "caf\u00e9 est")


def test_emoji_astral_characters():
    target = "Great job \U0001f389\U0001f389 you  did it!"
    assert span_of(target, "\U0001f389 you did") == (11, 21, "\U0001f389 you  did")
    assert target.index("you") == 13


def test_cjk():
    target = "\u4eca\u5929\u5929\u6c14\u5f88\u597d\u3002 \u6211\u4eec\u53bb\u516c\u56ed\u5427"
    assert span_of(target, "\u5f88\u597d\u3002\n\u6211\u4eec") == (4, 10, "\u5f88\u597d\u3002 \u6211\u4eec")


def test_dotted_capital_i_before_the_quote_keeps_offsets():
    # 'İ'.lower() is two characters; offsets after it must still index the original string.
    target = "\u0130stanbul is  LARGE"
    assert len("\u0130".lower()) == 2
    assert span_of(target, "is large") == (9, 18, "is  LARGE")
    assert span_of(target, "\u0130STANBUL IS") == (0, 11, "\u0130stanbul is")


def test_many_expanding_characters_before_the_quote():
    target = "\u0130" * 50 + " Tail  End"
    assert span_of(target, "tail end") == (51, 60, "Tail  End")


# --- find_quote: taken occurrences -----------------------------------------------------------


def test_taken_occurrences_are_skipped_then_first_reused():
    target = "ok. Bad idea. ok. bad  idea."
    assert find_quote(target, "bad idea") == (4, 12)
    assert find_quote(target, "bad idea", [(4, 12)]) == (18, 27)
    assert find_quote(target, "bad idea", [(4, 12), (18, 27)]) == (4, 12)


# --- part_target ----------------------------------------------------------------------------


def test_part_target():
    call = tool_call("search", {"query": "caf\u00e9", "limit": 5, "filters": {"city": "K\u00f6ln", "n": [1, 2]}})
    assert part_target(text("hi"), None) == "hi"
    assert part_target({"type": "reasoning", "content": "think"}, None) == "think"
    assert part_target(call, "query") == "caf\u00e9"
    assert part_target(call, "limit") == "5"
    assert part_target(call, "filters") == '{"city":"K\u00f6ln","n":[1,2]}'
    assert part_target(call, None) == '{"query":"caf\u00e9","limit":5,"filters":{"city":"K\u00f6ln","n":[1,2]}}'
    assert part_target(call, "missing") is None
    assert part_target({"type": "tool_call_response", "id": "call_1", "response": "x"}, None) is None
    # Arguments as JSON text, not the object ToolCallPart declares: part_target still reads them.
    json_text_call = cast(ToolCallPart, {"type": "tool_call", "id": "call_1", "name": "t", "arguments": '{"a": "b"}'})
    assert part_target(json_text_call, "a") == "b"


# --- align_quotes ---------------------------------------------------------------------------


def test_align_exact_text_part():
    parts = [text("The answer is 42, obviously.")]
    spans, dropped = align_quotes(parts, [Quote("overconfident", "obviously", "too sure")])
    assert dropped == []
    assert spans == [Span("overconfident", "obviously", "too sure", 0, 18, 27, None, None)]


def test_align_returns_message_text_not_model_quote():
    parts = [text("It\u2019s  DEFINITELY true.")]
    (span,), _ = align_quotes(parts, [Quote("hedge", "it's definitely")])
    assert (span.start_offset, span.end_offset) == (0, 16)
    assert span.text == "It\u2019s  DEFINITELY" == parts[0]["content"][0:16]


def test_repeated_quote_same_label_takes_next_occurrence():
    parts = [text("Trust me. I know. Trust me.")]
    spans, dropped = align_quotes(parts, [Quote("x", "trust me"), Quote("x", "Trust me"), Quote("x", "trust me")])
    assert [(s.start_offset, s.end_offset) for s in spans] == [(0, 8), (18, 26)]
    assert [d.kind for d in dropped] == ["duplicate"]  # a third quote can only land on a span already stored
    assert [s.text for s in spans] == ["Trust me", "Trust me"]


def test_repeated_quote_different_labels_both_take_first():
    parts = [text("Trust me. I know. Trust me.")]
    spans, _ = align_quotes(parts, [Quote("a", "Trust me"), Quote("b", "Trust me")])
    assert [(s.label, s.start_offset, s.end_offset) for s in spans] == [("a", 0, 8), ("b", 0, 8)]


def test_taken_bookkeeping_is_per_part():
    parts = [text("same words"), text("same words")]
    spans, _ = align_quotes(parts, [Quote("x", "same", message_part_index=0), Quote("x", "same", message_part_index=1)])
    assert [(s.message_part_index, s.start_offset, s.end_offset) for s in spans] == [(0, 0, 4), (1, 0, 4)]


def test_tool_call_parameters():
    args = {"query": "best caf\u00e9  in town", "limit": 25, "filters": {"city": "K\u00f6ln", "open": True}}
    parts: list[Part] = [text("Let me search."), tool_call("web_search", args)]
    quotes = [
        Quote("a", "Caf\u00e9 in", message_part_index=1, tool_name="web_search", parameter_name="query"),
        Quote("b", "25", message_part_index=1, tool_name="web_search", parameter_name="limit"),
        Quote("c", '"city":"K\u00f6ln"', message_part_index=1, tool_name="web_search", parameter_name="filters"),
        Quote("d", '"limit":25', message_part_index=1, tool_name="web_search"),
    ]
    spans, dropped = align_quotes(parts, quotes)
    assert dropped == []
    assert spans == [
        Span("a", "caf\u00e9  in", None, 1, 5, 13, "web_search", "query"),
        Span("b", "25", None, 1, 0, 2, "web_search", "limit"),
        Span("c", '"city":"K\u00f6ln"', None, 1, 1, 14, "web_search", "filters"),
        Span("d", '"limit":25', None, 1, 30, 40, "web_search", None),
    ]
    whole = part_target(parts[1], None)
    assert whole is not None and whole[30:40] == '"limit":25'


def test_tool_name_comes_from_the_part():
    parts = [tool_call("real_name", {"q": "hello"})]
    (span,), _ = align_quotes(parts, [Quote("x", "hello", tool_name="wrong_name", parameter_name="q")])
    assert (span.tool_name, span.parameter_name, span.start_offset, span.end_offset) == ("real_name", "q", 0, 5)


def test_parameter_name_ignored_for_text_parts():
    parts = [text("plain words")]
    (span,), _ = align_quotes(parts, [Quote("x", "words", parameter_name="q")])
    assert (span.parameter_name, span.tool_name, span.start_offset) == (None, None, 6)


def test_wrong_part_index_falls_back_to_containing_part():
    parts: list[Part] = [
        {"type": "reasoning", "content": "I should flatter the user."},
        text("First part."),
        tool_call("noop", {"x": 1}),
        text("You are absolutely   right!"),
    ]
    spans, dropped = align_quotes(
        parts,
        [
            Quote("syc", "absolutely right", message_part_index=1),
            Quote("syc", "flatter the user", message_part_index=3),
            Quote("syc", "absolutely right", message_part_index=2),
            Quote("syc", "first part", message_part_index=9),
        ],
    )
    assert [d.kind for d in dropped] == ["duplicate"]  # all occurrences taken -> the same span, stored once
    assert [(s.message_part_index, s.start_offset, s.end_offset, s.text) for s in spans] == [
        (3, 8, 26, "absolutely   right"),
        (0, 9, 25, "flatter the user"),
        (1, 0, 10, "First part"),
    ]
    assert spans[2].tool_name is None and spans[2].parameter_name is None


def test_quote_naming_a_tool_call_response_falls_back_to_text():
    parts: list[Part] = [text("done, see results"), {"type": "tool_call_response", "id": "c", "response": "results"}]
    (span,), dropped = align_quotes(parts, [Quote("x", "see results", message_part_index=1)])
    assert dropped == [] and (span.message_part_index, span.start_offset) == (0, 6)


def test_drops_with_reasons():
    parts: list[Part] = [text("Hello there."), tool_call("search", {"q": "cats"})]
    quotes = [
        Quote("a", "nowhere to be seen"),
        Quote("b", ""),
        Quote("c", "  \n "),
        Quote("d", "cats", message_part_index=1, parameter_name="x"),
        Quote("e", "unfindable", message_part_index=3),
        Quote("f", "Hello", message_part_index=-1),
    ]
    spans, dropped = align_quotes(parts, quotes)
    assert [(d.quote.label, d.reason) for d in dropped] == [
        ("a", "quote not found in the message"),
        ("b", "empty quote"),
        ("c", "empty quote"),
        ("d", "tool call has no parameter 'x'"),
        ("e", "part index 3 out of range"),
    ]
    assert all(isinstance(d, Dropped) and d.quote is quotes["abcde".index(d.quote.label)] for d in dropped)
    # A negative index is out of range too, but the fallback finds the quote in part 0.
    assert [(s.label, s.message_part_index, s.start_offset) for s in spans] == [("f", 0, 0)]


def test_tool_call_quote_not_found_in_call_is_searched_in_text_parts():
    parts: list[Part] = [text("calling search for dogs"), tool_call("search", {"q": "cats"})]
    (span,), _ = align_quotes(parts, [Quote("x", "for dogs", message_part_index=1, parameter_name="q")])
    assert (span.message_part_index, span.start_offset, span.end_offset, span.parameter_name) == (0, 15, 23, None)


def test_output_preserves_input_order():
    parts = [text("alpha beta gamma delta")]
    quotes = [Quote("x", w) for w in ["delta", "alpha", "missing", "gamma", "beta"]]
    spans, dropped = align_quotes(parts, quotes)
    assert [s.text for s in spans] == ["delta", "alpha", "gamma", "beta"]
    assert [d.quote.text for d in dropped] == ["missing"]


def test_long_target_is_fast_enough():
    body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 4000) + "The NEEDLE  is here."
    quotes = [Quote(f"l{i}", "the needle is here") for i in range(200)]
    spans, dropped = align_quotes([text(body)], quotes)
    assert dropped == [] and len(spans) == 200
    assert {(s.start_offset, s.text) for s in spans} == {(len(body) - 20, "The NEEDLE  is here")}


# --- property-style: mutated substrings map back to the original offsets ---------------------

SAMPLE_TEXTS = [
    "I checked the logs and the deployment failed at 14:02 UTC because the\n"
    "database migration timed out. You should roll back to version 2.3.1,\n"
    "then re-run the migration with a longer timeout (e.g. 600 seconds).",
    "Sure! Here's a quick summary:\n\n- The caf\u00e9 opens at 8am.\n- Parking is free after 6pm.\n"
    "- Reservations are \u201chighly recommended\u201d on weekends.\n\nLet me know if you need anything else \U0001f60a",
    "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n    return a + b\n\n"
    "# Usage: add(2, 3) returns 5, and add('x', 'y') returns 'xy'.",
    "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002 Tokyo is the capital of Japan, "
    "with about 14 million residents in the city proper \u2014 and far more in the metro area.",
]
WHITESPACE_VARIANTS = [" ", "  ", "\n", "\t", "\u00a0", " \n "]


def _normal(s: str) -> str:
    return re.sub(r"\s+", " ", s).lower()


def _nospace(s: str) -> str:
    return re.sub(r"\s+", "", s).lower()


def _mutate(rng: random.Random, s: str) -> str:
    s = re.sub(r"\s+", lambda _: rng.choice(WHITESPACE_VARIANTS), s)
    return "".join(c.upper() if rng.random() < 0.3 else c.lower() if rng.random() < 0.3 else c for c in s)


def _random_substring(rng: random.Random, source: str) -> tuple[int, int] | None:
    """A substring that starts and ends on non-space and is unique under normalisation."""
    start = rng.randrange(len(source))
    end = min(len(source), start + rng.randint(3, 60))
    while start < end and source[start].isspace():
        start += 1
    while end > start and source[end - 1].isspace():
        end -= 1
    if end - start < 3 or _normal(source).count(_normal(source[start:end])) != 1:
        return None
    return start, end


def test_property_whitespace_and_case_mutations_align_to_original_offsets():
    rng = random.Random(0)
    checked = 0
    for source in SAMPLE_TEXTS:
        for _ in range(150):
            picked = _random_substring(rng, source)
            if picked is None:
                continue
            start, end = picked
            quote = _mutate(rng, source[start:end])
            spans, dropped = align_quotes([text("unrelated"), text(source)], [Quote("p", quote, message_part_index=1)])
            assert dropped == [], quote
            assert (spans[0].start_offset, spans[0].end_offset) == (start, end), quote
            assert spans[0].text == source[start:end]
            checked += 1
    assert checked > 300


def test_property_dropped_spaces_align_via_whitespace_blind_tier():
    rng = random.Random(0)
    checked = 0
    for source in SAMPLE_TEXTS:
        for _ in range(100):
            picked = _random_substring(rng, source)
            if picked is None:
                continue
            start, end = picked
            original = source[start:end]
            if _nospace(source).count(_nospace(original)) != 1:
                continue
            quote = re.sub(r"\s+", lambda _: rng.choice(["", " ", "\n"]), original)
            assert find_quote(source, quote) == (start, end), quote
            checked += 1
    assert checked > 200



def test_an_unusable_part_index_searches_every_part_tool_arguments_included():
    parts: list[Part] = [text("Booked."), tool_call("book_table", {"party_size": "12", "time": "19:00"})]
    spans, dropped = align_quotes(parts, [Quote("x", "12", message_part_index=-1), Quote("x", "nowhere", message_part_index=7)])
    assert [(s.message_part_index, s.parameter_name, s.text) for s in spans] == [(1, "party_size", "12")]
    assert [(d.kind, d.reason) for d in dropped] == [("part_index_out_of_range", "part index 7 out of range")]
