"""Rule evaluators (issue 24): checking a rules file, and spans at exact offsets with no model call."""

import json
from typing import cast

import pytest

from experiment_runner.conversation import Part, TextPart
from experiment_runner.errors import BadInputError
from experiment_runner.evaluation.rules import RuleSpec, apply_rules, check_rules, load_rules, merge_spans, parse_rules
from experiment_runner.evaluation.spans import Span

REPLY_TEXT: TextPart = {"type": "text", "content": "Call me at 555-1234. todo: fix. TODO"}
REPLY: list[Part] = [
    {"type": "reasoning", "content": "TODO think"},
    REPLY_TEXT,
    {"type": "tool_call", "name": "book", "id": "c1", "arguments": {"phone": "555-9876", "party": 4, "note": "todo"}},
]


def rules(*raw: dict) -> list:
    # check_rules returns the rules it checked as plain dicts (the spec stores them so); each has RuleSpec's shape.
    return parse_rules(cast(list[RuleSpec], check_rules(list(raw))))


def test_regex_marks_every_match_in_text_and_tool_arguments_not_reasoning() -> None:
    spans = apply_rules(rules({"label": "Phone", "regex": r"\d{3}-\d{4}"}), REPLY)
    assert [(s.message_part_index, s.start_offset, s.end_offset, s.text, s.tool_name, s.parameter_name) for s in spans] == [
        (1, 11, 19, "555-1234", None, None),
        (2, 0, 8, "555-9876", "book", "phone"),
    ]
    assert spans[0].explanation == r"rule 1 (regex /\d{3}-\d{4}/): matched"
    assert REPLY_TEXT["content"][11:19] == "555-1234"


def test_regex_flags_and_not_contains() -> None:
    found = apply_rules(rules({"label": "Todo", "regex": r"\btodo\b", "flags": "i", "name": "no todo"},
                              {"label": "Todo", "not_contains": "TODO"}), REPLY)
    assert [(s.message_part_index, s.start_offset, s.end_offset, s.explanation) for s in found] == [
        (1, 21, 25, 'rule 1 "no todo" (regex /\\btodo\\b/i): matched'),
        (1, 32, 36, 'rule 1 "no todo" (regex /\\btodo\\b/i): matched'),
        (2, 0, 4, 'rule 1 "no todo" (regex /\\btodo\\b/i): matched'),
        (1, 32, 36, 'rule 2 (not_contains "TODO"): matched'),
    ]


def test_non_string_arguments_are_matched_in_their_compact_json() -> None:
    spans = apply_rules(rules({"label": "Four", "regex": "4"}), REPLY)
    assert [(s.parameter_name, s.start_offset, s.end_offset) for s in spans] == [(None, 18, 19), ("party", 0, 1)]  # "1234", then 4


def test_whole_reply_rules_mark_the_whole_text_part() -> None:
    found = apply_rules(rules({"label": "Format", "json_valid": True}, {"label": "Missing", "contains": "Sources:"}), REPLY)
    text = REPLY_TEXT["content"]
    assert [(s.label, s.message_part_index, s.start_offset, s.end_offset, s.text) for s in found] == [
        ("Format", 1, 0, len(text), text), ("Missing", 1, 0, len(text), text),
    ]
    assert found[0].explanation is not None and found[0].explanation.startswith("rule 1 (json_valid): the reply is not valid JSON (Expecting value at char 0)")
    assert found[1].explanation == 'rule 2 (contains "Sources:"): the reply does not contain it'
    ok: list[Part] = [{"type": "text", "content": ' {"a": 1, "Sources:": []} '}]
    assert apply_rules(rules({"label": "Format", "json_valid": True}, {"label": "Missing", "contains": "Sources:"}), ok) == []
    assert apply_rules(rules({"label": "Format", "json_valid": True}), [REPLY[2]]) == []  # no text: nothing to mark


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"regex": "x"}, "rule 1: needs a non-empty string 'label'"),
        ({"label": "L"}, "rule 1: needs exactly one of regex, json_valid, contains, not_contains"),
        ({"label": "L", "regex": "x", "contains": "y"}, "needs exactly one of"),
        ({"label": "L", "regex": "("}, "rule 1: invalid regex (missing ), unterminated subpattern at position 0)"),
        ({"label": "L", "regex": "x", "flags": "q"}, "'flags' takes letters from imsx"),
        ({"label": "L", "json_valid": False}, "'json_valid' must be true"),
        ({"label": "L", "contains": ""}, "'contains' must be a non-empty string"),
        ({"label": "L", "contains": "x", "flags": "i"}, "unknown key(s) flags"),
    ],
)
def test_bad_rules_are_named(raw: dict, message: str) -> None:
    with pytest.raises(BadInputError) as caught:
        check_rules([raw], "r.json")
    assert str(caught.value).startswith("r.json: rule 1") and message in str(caught.value)


def test_a_rules_file_must_be_a_list(tmp_path) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"label": "x"}))
    with pytest.raises(BadInputError, match="expected a JSON list of rules"):
        load_rules(path)
    path.write_text(json.dumps([{"label": " Leak ", "regex": "sk-\\w+", "flags": "mi"}]))
    assert load_rules(path) == [{"label": "Leak", "regex": "sk-\\w+", "flags": "im"}]


def test_merge_keeps_model_spans_and_skips_rule_duplicates() -> None:
    model = [Span("L", "abc", "model", 0, 0, 3, None, None)]
    rule = [Span("L", "abc", "rule 1", 0, 0, 3, None, None), Span("L", "bc", "rule 1", 0, 1, 3, None, None)]
    assert [s.explanation for s in merge_spans(model, rule)] == ["model", "rule 1"]
