"""Import edge cases (issue 14): each exits 2 with `Error: FILE:LINE: ...` and stores nothing; arrays stream."""

import json
from pathlib import Path

import pytest
from factories import refused_import

from experiment_runner.ingest.formats import MAX_DEPTH
from experiment_runner.ingest.importing import read_source

USER = {"role": "user", "content": "What is the weather?"}
CALL = {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


def nested(depth: int) -> dict:
    """A conversation whose deepest value sits `depth` levels down (the conversation itself is level 1)."""
    inner: object = "x"
    for _ in range(depth - 6):  # conversation > messages > message > parts > part > arguments > ...
        inner = {"k": inner}
    part = {"type": "tool_call", "name": "f", "arguments": {"k": inner}}
    return {"messages": [{"role": "assistant", "parts": [part]}]}


CASES = {
    "empty": ("", 1, "no conversations in {file}"),
    "blank lines": ("\n  \n\n", 1, "no conversations in {file}"),
    "empty array": ("[\n]\n", 1, "no conversations in {file}"),
    "tool without id": (json.dumps({"messages": [USER, CALL, {"role": "tool", "content": "sunny"}]}), 1, "a tool message needs a 'tool_call_id'"),
    "tool with unknown id": (json.dumps({"messages": [USER, CALL, {"role": "tool", "tool_call_id": "call_9", "content": "sunny"}]}), 1,
                             "tool_call_id 'call_9' matches no earlier tool call"),
    "lone surrogate": ('{"messages": [{"role": "user", "content": "bad \\ud800 here"}]}', 1, "lone surrogate"),
    "lone surrogate in a key": ('{"messages": [{"role": "user", "content": "x", "\\udc00": 1}]}', 1, "lone surrogate"),
    "lone surrogate in an array": ('[\n{"messages": [{"role": "user", "content": "fine"}]},\n{"messages": [{"role": "user", "content": "\\ud83d"}]}]', 3, "lone surrogate"),
    "too deep": (json.dumps(nested(MAX_DEPTH + 1)), 1, f"nested deeper than {MAX_DEPTH} levels"),
    "too deep in an array": ("[\n" + json.dumps(nested(MAX_DEPTH + 1)) + "\n]", 2, f"nested deeper than {MAX_DEPTH} levels"),
    "far too deep": ('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}", 1, f"nested deeper than {MAX_DEPTH} levels"),
    "far too deep in an array": ("[" * 100_000 + "]" * 100_000, 1, f"nested deeper than {MAX_DEPTH} levels"),
    "unclosed array": ('[\n{"messages": [{"role": "user", "content": "fine"}]},\n', 2, "invalid JSON"),
    "garbage after an array": ('[{"messages": [{"role": "user", "content": "fine"}]}]\nnope', 2, "invalid JSON"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_edge_case_exits_2_naming_file_and_line_and_stores_nothing(case: str, run_cli, db_path: Path, tmp_path: Path) -> None:
    text, line, message = CASES[case]
    assert message.format(file=tmp_path / "input.json") in refused_import(run_cli, db_path, tmp_path, text, line)


def test_the_deepest_allowed_nesting_and_paired_surrogates_import(run_cli, tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    emoji = {"messages": [{"role": "user", "content": "\ud83d\ude00 and a \\ud800 written out"}]}  # a real pair; an escaped backslash
    path.write_text("[\n" + json.dumps(nested(MAX_DEPTH)) + ",\n" + json.dumps(emoji) + "\n]\n", encoding="utf-8")
    result = run_cli("import", path)
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.split()) == 2


def test_arrays_stream_with_the_right_line_of_every_element(tmp_path: Path) -> None:
    conv = {"id": "a", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    pretty = json.dumps([conv, {**conv, "id": "b"}], indent=2)
    one_line = json.dumps([{**conv, "id": "c"}, {**conv, "id": "d"}])
    compact = "[\n" + ",\n".join(json.dumps({**conv, "id": i}) for i in "efg") + "\n]"
    (tmp_path / "pretty.json").write_text(pretty)
    (tmp_path / "one.json").write_text(one_line)
    (tmp_path / "compact.json").write_text("\ufeff" + compact)  # a BOM is allowed
    assert [(p.id, p.source) for p in read_source(str(tmp_path / "pretty.json")).conversations] == [
        ("a", f"{tmp_path}/pretty.json:2"), ("b", f"{tmp_path}/pretty.json:{pretty.splitlines().index('  },') + 2}")]
    assert [p.source.rsplit(":", 1)[1] for p in read_source(str(tmp_path / "one.json")).conversations] == ["1", "1"]
    assert [(p.id, p.source.rsplit(":", 1)[1]) for p in read_source(str(tmp_path / "compact.json")).conversations] == [("e", "2"), ("f", "3"), ("g", "4")]
    floats = tmp_path / "floats.json"
    floats.write_text(json.dumps([{"messages": [{"role": "assistant", "content": "x", "generation": {"model": "m", "cost_usd": 0.25}}]}]))
    (parsed,) = read_source(str(floats)).conversations
    generation = parsed.messages[0]["generation"]
    assert generation is not None and generation["cost_usd"] == 0.25 and isinstance(generation["cost_usd"], float)
