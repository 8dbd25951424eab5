"""Highlighting (issue 8): offsets to marked-up HTML, overlaps, unicode, escaping, label colours."""

import random
from html.parser import HTMLParser

import pytest

from experiment_runner.conversation import Annotation, Part
from experiment_runner.report.highlight import (
    DEFAULT_COLOURS,
    HighlightSpan,
    annotation_location,
    highlight,
    label_class,
    label_colour,
    parts_view,
)


class _Segments(HTMLParser):
    """The highlighted HTML read back: (text, labels, mark attributes) per run of text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.segments: list[tuple[str, tuple[str, ...], dict[str, str]]] = []
        self.mark: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag == "mark" and self.mark is None, "only flat <mark> elements are expected"
        self.mark = {k: v or "" for k, v in attrs}

    def handle_endtag(self, tag: str) -> None:
        assert tag == "mark"
        self.mark = None

    def handle_data(self, data: str) -> None:
        labels = tuple(self.mark["data-labels"].split("|")) if self.mark else ()
        self.segments.append((data, labels, dict(self.mark or {})))


def segments(markup: str) -> list[tuple[str, tuple[str, ...], dict[str, str]]]:
    parser = _Segments()
    parser.feed(markup)
    parser.close()
    return parser.segments


def marked(markup: str) -> list[tuple[str, tuple[str, ...]]]:
    """Only the marked runs: (exact text, labels)."""
    return [(text, labels) for text, labels, _ in segments(markup) if labels]


def span(start: int, end: int, label: str = "Fabrication", explanation: str | None = None, ann: str | None = None) -> HighlightSpan:
    return HighlightSpan(start, end, label, explanation, ann)


def test_no_spans_gives_the_escaped_text() -> None:
    assert highlight("a < b & c", []) == "a &lt; b &amp; c"
    assert highlight("", []) == ""


def test_a_span_marks_exactly_its_characters() -> None:
    text = "The sky is green today."
    start = text.index("green")
    markup = highlight(text, [span(start, start + 5, explanation="It is blue.", ann="a1")])
    assert marked(markup) == [("green", ("Fabrication",))]
    (_, _, attrs), = [s for s in segments(markup) if s[1]]
    assert attrs["title"] == "Fabrication: It is blue." and attrs["data-ann"] == "a1"
    assert "lbl-fabrication" in attrs["class"].split() and "#fecaca" in attrs["style"]
    assert "".join(t for t, _, _ in segments(markup)) == text


def test_spans_at_the_start_and_end_and_the_whole_string() -> None:
    text = "abcdef"
    assert marked(highlight(text, [span(0, 2), span(4, 6, "Reasoning Error")])) == [
        ("ab", ("Fabrication",)),
        ("ef", ("Reasoning Error",)),
    ]
    assert marked(highlight(text, [span(0, 6)])) == [("abcdef", ("Fabrication",))]


def test_overlapping_spans_are_split_at_every_boundary() -> None:
    markup = highlight("abcdefgh", [span(0, 5, "Fabrication"), span(3, 8, "Reasoning Error")])
    assert marked(markup) == [
        ("abc", ("Fabrication",)),
        ("de", ("Fabrication", "Reasoning Error")),
        ("fgh", ("Reasoning Error",)),
    ]
    overlap = next(attrs for _, labels, attrs in segments(markup) if len(labels) == 2)
    assert overlap["data-depth"] == "2" and "hl-overlap" in overlap["class"]
    assert "linear-gradient" in overlap["style"]
    assert overlap["title"].splitlines() == ["Fabrication", "Reasoning Error"]


def test_nested_and_identical_spans() -> None:
    markup = highlight("abcdefgh", [span(0, 8, "Fabrication", ann="outer"), span(2, 4, "Incorrect Refusal", ann="inner")])
    assert marked(markup) == [
        ("ab", ("Fabrication",)),
        ("cd", ("Fabrication", "Incorrect Refusal")),
        ("efgh", ("Fabrication",)),
    ]
    inner = next(attrs for _, labels, attrs in segments(markup) if len(labels) == 2)
    assert inner["data-ann"] == "outer inner"
    same = highlight("abc", [span(0, 3, ann="x"), span(0, 3, ann="y")])
    assert marked(same) == [("abc", ("Fabrication",))]  # one label, listed once
    assert segments(same)[0][2]["data-depth"] == "2"


def test_unicode_offsets_are_python_string_indices() -> None:
    text = "Café ☕ in 東京 costs 5€ 👩‍💻 — naïve 🎉!"
    for quote in ("Café", "☕", "東京", "5€", "👩‍💻", "naïve", "🎉", "東京 costs 5€ 👩‍💻"):
        start = text.index(quote)
        assert marked(highlight(text, [span(start, start + len(quote))])) == [(quote, ("Fabrication",))]
    combining = "cafe\u0301 ok"  # decomposed accent: two code points
    assert marked(highlight(combining, [span(0, 5)])) == [("cafe\u0301", ("Fabrication",))]


def test_text_is_escaped_and_markup_in_the_data_stays_text() -> None:
    text = "Run <script>alert(1)</script> & say \"hi\" or 'bye'"
    start = text.index("<script>")
    markup = highlight(text, [span(start, start + 8)])
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    assert marked(markup) == [("<script>", ("Fabrication",))]
    assert "".join(t for t, _, _ in segments(markup)) == text


def test_labels_explanations_and_ids_are_escaped_in_attributes() -> None:
    evil = 'x" onmouseover="alert(1)'
    markup = highlight("abc", [span(0, 3, label='<b>"Odd" label</b>', explanation=evil + " <img src=x> 'q'", ann=evil)])
    assert "<b>" not in markup and "<img" not in markup and ' onmouseover="' not in markup
    (_, labels, attrs), = segments(markup)
    assert labels == ('<b>"Odd" label</b>',)
    assert attrs["title"] == f"<b>\"Odd\" label</b>: {evil} <img src=x> 'q'"
    assert attrs["data-ann"] == evil
    assert set(attrs) == {"class", "data-labels", "data-depth", "data-ann", "title", "style"}


@pytest.mark.parametrize("bad", [(-1, 2), (2, 1), (0, 4)])
def test_spans_outside_the_text_are_refused(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        highlight("abc", [span(*bad)])


def test_empty_spans_mark_nothing() -> None:
    assert highlight("abc", [span(1, 1)]) == "abc"


def test_random_spans_round_trip() -> None:
    rng = random.Random(8)
    alphabet = "ab <>&\"'é東🎉\n"
    labels = ["Fabrication", "Context Misattribution", "Reasoning Error", "Custom"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        spans = []
        for _ in range(rng.randint(0, 4)):
            a, b = sorted(rng.randint(0, len(text)) for _ in range(2))
            spans.append(span(a, b, rng.choice(labels)))
        runs = segments(highlight(text, spans))
        assert "".join(t for t, _, _ in runs) == text
        position = 0
        for run_text, run_labels, _ in runs:
            for offset in range(position, position + len(run_text)):
                expected = tuple(dict.fromkeys(s.label for s in spans if s.start <= offset < s.end))
                assert run_labels == expected
            position += len(run_text)


def test_label_colours_are_fixed_for_defaults_and_stable_for_others() -> None:
    assert set(DEFAULT_COLOURS) == {"Fabrication", "Context Misattribution", "Reasoning Error", "Incorrect Refusal"}
    assert len({c.background for c in DEFAULT_COLOURS.values()}) == 4
    assert label_colour("Fabrication").background == "#fecaca"
    custom = label_colour("Wrong Size")
    assert custom == label_colour("Wrong Size") and custom.background.startswith("hsl(")
    assert custom != label_colour("Wrong Date")
    assert label_colour("Wrong Size").background == "hsl(117 85% 84%)"  # crc32, not the per-process hash()
    assert label_class("Context Misattribution") == "lbl-context-misattribution"
    assert label_class("<b>") == "lbl-b" and label_class("東京") == "lbl-x"


def test_tool_call_parameters_get_their_own_highlights() -> None:
    parts: list[Part] = [
        {"type": "text", "content": "Booking it now."},
        {"type": "tool_call", "id": "c1", "name": "book_table",
         "arguments": {"restaurant": "Café Luz", "party_size": 6, "when": {"day": "Fri"}}},
        {"type": "tool_call_response", "id": "c1", "response": {"ok": True}},
    ]
    annotations: list[Annotation] = [
        {"id": "p", "label": "Fabrication", "text": "6", "explanation": "asked for 4", "message_part_index": 1,
         "start_offset": 0, "end_offset": 1, "tool_name": "book_table", "parameter_name": "party_size"},
        {"id": "w", "label": "Reasoning Error", "text": '"Fri"', "explanation": None, "message_part_index": 1,
         "start_offset": 7, "end_offset": 12, "tool_name": "book_table", "parameter_name": "when"},
        {"id": "t", "label": "Fabrication", "text": "Booking", "explanation": None, "message_part_index": 0,
         "start_offset": 0, "end_offset": 7, "tool_name": None, "parameter_name": None},
        {"id": "bad", "label": "Fabrication", "text": "king it now.", "explanation": None, "message_part_index": 0,
         "start_offset": 3, "end_offset": 99, "tool_name": None, "parameter_name": None},
    ]
    views, unplaced = parts_view(parts, annotations)
    assert unplaced == {"bad"}
    assert marked(views[0]["html"]) == [("Booking", ("Fabrication",))]
    params = {p["name"]: p["html"] for p in views[1]["params"]}
    assert marked(params["party_size"]) == [("6", ("Fabrication",))]
    assert marked(params["when"]) == [('"Fri"', ("Reasoning Error",))]  # into compact JSON {"day":"Fri"}
    assert marked(params["restaurant"]) == [] and views[1]["whole"] is None
    assert views[2] == {"kind": "tool_call_response", "text": '{\n  "ok": true\n}'}
    assert annotation_location(parts, annotations[0]) == "part 1, book_table.party_size"
    assert annotation_location(parts, annotations[2]) == "part 0"
