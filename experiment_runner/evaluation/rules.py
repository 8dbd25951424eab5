"""Rule evaluators: issues found without a model (`--rules FILE`), as spans at exact character offsets.

A rules file is a JSON list; each rule has a `label`, an optional `name`, and exactly one test:

* `{"regex": R, "flags": "imsx"}`: every non-empty match of R is a span (Python `re` syntax; flags i =
  ignore case, m = multiline, s = dot matches newline, x = verbose).
* `{"not_contains": TEXT}`: every occurrence of TEXT (exact, case-sensitive) is a span.
* `{"contains": TEXT}`: a reply whose text parts do not contain TEXT is an issue.
* `{"json_valid": true}`: a reply whose text (its text parts joined) is not valid JSON is an issue.

Match rules (regex, not_contains) look at every text part and at every tool-call argument (offsets into
the argument's string, or its compact JSON when it is not a string, as the evaluator's spans are),
not at reasoning parts. Whole-reply rules (contains, json_valid) mark each non-empty text part from its
first to its last character; a reply without text has nothing to mark and is not flagged. Each span's
explanation names its rule. Pure: no store, no model call.
"""

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Required, TypedDict, cast

from experiment_runner.conversation import Part, ToolCallPart
from experiment_runner.errors import BadInputError
from experiment_runner.evaluation.spans import Span, part_target
from experiment_runner.files import read_json_file

TESTS = ("regex", "json_valid", "contains", "not_contains")
FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}
RULES_MODEL = "rules"
"""The `model` of an evaluation made by rules alone."""


@dataclass(frozen=True)
class Rule:
    """One checked rule: its 1-based position in the file, label, test and argument."""

    number: int
    label: str
    test: str
    argument: str | None  # the pattern or text (None for json_valid)
    flags: str = ""
    name: str | None = None

    def describe(self) -> str:
        """`rule 2 "no-todo" (regex /TODO/i)`: how explanations name the rule."""
        what = {
            "regex": f"regex /{self.argument}/{self.flags}",
            "not_contains": f"not_contains {json.dumps(self.argument, ensure_ascii=False)}",
            "contains": f"contains {json.dumps(self.argument, ensure_ascii=False)}",
            "json_valid": "json_valid",
        }[self.test]
        return f"rule {self.number}" + (f" {json.dumps(self.name, ensure_ascii=False)}" if self.name else "") + f" ({what})"

    def pattern(self) -> re.Pattern[str]:
        """The compiled regex (a regex rule) or the escaped text (not_contains)."""
        if self.test == "regex":
            flags = 0
            for flag in self.flags:
                flags |= FLAGS[flag]
            return re.compile(self.argument or "", flags)
        return re.compile(re.escape(self.argument or ""))


class RuleSpec(TypedDict, total=False):
    """A checked rule as `--rules` gives it and the experiment stores it: a label, and exactly one test."""

    label: Required[str]
    name: str
    regex: str
    flags: str  # regex flags, letters of `FLAGS`
    contains: str
    not_contains: str
    json_valid: bool


def _check_one(index: int, raw: Any, where: str) -> "RuleSpec":
    at = f"{where}: rule {index + 1}"
    if not isinstance(raw, dict):
        raise BadInputError(f"{at}: expected an object like {{\"label\": L, \"regex\": R}}")
    label = raw.get("label")
    if not isinstance(label, str) or not label.strip():
        raise BadInputError(f"{at}: needs a non-empty string 'label'")
    tests = [t for t in TESTS if t in raw]
    if len(tests) != 1:
        raise BadInputError(f"{at}: needs exactly one of {', '.join(TESTS)}")
    test = tests[0]
    unknown = set(raw) - {"label", "name", test} - ({"flags"} if test == "regex" else set())
    if unknown:
        raise BadInputError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}")
    rule = cast(RuleSpec, {"label": label.strip(), test: raw[test]})
    if "name" in raw:
        if not isinstance(raw["name"], str) or not raw["name"].strip():
            raise BadInputError(f"{at}: 'name' must be a non-empty string")
        rule["name"] = raw["name"].strip()
    if test == "json_valid":
        if raw[test] is not True:
            raise BadInputError(f"{at}: 'json_valid' must be true")
        return rule
    if not isinstance(raw[test], str) or not raw[test]:
        raise BadInputError(f"{at}: '{test}' must be a non-empty string")
    if test == "regex":
        flags = raw.get("flags", "")
        if not isinstance(flags, str) or set(flags) - set(FLAGS):
            raise BadInputError(f"{at}: 'flags' takes letters from {''.join(FLAGS)}, got {flags!r}")
        try:
            parse_rules([{**rule, "flags": flags}])[0].pattern()
        except re.error as exc:
            raise BadInputError(f"{at}: invalid regex ({exc})") from None
        if flags:
            rule["flags"] = "".join(sorted(set(flags), key="imsx".index))
    return rule


def check_rules(data: Any, where: str = "rules") -> list[dict[str, Any]]:  # the spec's `rules`
    """Validate a rules document (a JSON list); return it normalised, as stored. `BadInputError` names the rule."""
    if not isinstance(data, list):
        raise BadInputError(f'{where}: expected a JSON list of rules, e.g. [{{"label": "Leak", "regex": "sk-[A-Za-z0-9]+"}}]')
    return [dict(_check_one(index, raw, where)) for index, raw in enumerate(data)]


def load_rules(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a `--rules` file."""
    return check_rules(read_json_file(path, "rules"), str(path))


def parse_rules(stored: Sequence["RuleSpec"] | None) -> list[Rule]:
    """`Rule`s from checked (stored) rule objects."""
    rules = []
    for number, raw in enumerate(stored or (), start=1):
        test = next(t for t in TESTS if t in raw)
        argument = None if test == "json_valid" else cast(str, raw.get(test))
        rules.append(Rule(number, raw["label"], test, argument, raw.get("flags", ""), raw.get("name")))
    return rules


def rules_of(labels: Mapping[str, Any] | None) -> list[Rule]:
    """The rules stored with an experiment: its `labels` settings (`experiment.labels`), key `rules`."""
    return parse_rules((labels or {}).get("rules"))


def _targets(parts: Sequence[Part]) -> Iterable[tuple[int, str, str | None, str | None]]:
    """(part index, target string, tool name, parameter name) of every text part and tool-call argument."""
    for index, part in enumerate(parts):
        if part.get("type") == "text" and isinstance(content := part.get("content"), str):
            yield index, content, None, None
        elif part.get("type") == "tool_call":
            arguments = part.get("arguments")
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    pass
            names = list(arguments) if isinstance(arguments, dict) else [None]
            for name in names:
                target = part_target(part, name)
                if target:
                    yield index, target, cast(ToolCallPart, part).get("name"), name


def _whole_reply_problem(rule: Rule, texts: list[str]) -> str | None:
    """Why the reply's text breaks a whole-reply rule, or None."""
    joined = "".join(texts)
    if rule.test == "contains":
        return None if any(rule.argument and rule.argument in t for t in texts) else "the reply does not contain it"
    try:
        json.loads(joined)
    except ValueError as exc:
        return f"the reply is not valid JSON ({getattr(exc, 'msg', exc)} at char {getattr(exc, 'pos', 0)})"
    return None


def apply_rules(rules: Sequence[Rule], parts: Sequence[Part]) -> list[Span]:
    """Every span the rules find in a reply's parts, rule by rule, in offset order within a rule."""
    spans: list[Span] = []
    text_parts = [(i, content) for i, p in enumerate(parts) if p.get("type") == "text" and isinstance(content := p.get("content"), str)]
    for rule in rules:
        if rule.test in ("contains", "json_valid"):
            problem = _whole_reply_problem(rule, [t for _, t in text_parts])
            if problem is not None:
                note = f"{rule.describe()}: {problem}"
                spans += [Span(rule.label, t, note, i, 0, len(t), None, None) for i, t in text_parts if t]
            continue
        pattern, note = rule.pattern(), f"{rule.describe()}: matched"
        for index, target, tool, parameter in _targets(parts):
            for match in pattern.finditer(target):
                if match.end() > match.start():
                    spans.append(Span(rule.label, match.group(0), note, index, match.start(), match.end(), tool, parameter))
    return spans


def merge_spans(model_spans: Sequence[Span], rule_spans: Sequence[Span]) -> list[Span]:
    """The evaluator's spans, then the rules' spans not already there (same label, part, parameter and offsets)."""
    seen = {(s.label, s.message_part_index, s.parameter_name, s.start_offset, s.end_offset) for s in model_spans}
    merged = list(model_spans)
    for s in rule_spans:
        key = (s.label, s.message_part_index, s.parameter_name, s.start_offset, s.end_offset)
        if key not in seen:
            seen.add(key)
            merged.append(s)
    return merged
