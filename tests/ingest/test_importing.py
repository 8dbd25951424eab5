"""`import` and `conversations` through the CLI, on a real SQLite file."""

import json
from pathlib import Path

import pytest
from conftest import FIXTURES, dump

from experiment_runner.ingest.conversations import load_conversation
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import Store


def test_every_part_type_round_trips(store: Store) -> None:
    source = FIXTURES / "handwritten.native.jsonl"
    originals = [json.loads(line) for line in source.read_text().splitlines()]
    import_files(store, [str(source)])
    with store.read() as session:
        for original in originals:
            stored = load_conversation(session, original["id"])
            assert stored["type"] == "source"
            assert [m["sequence_number"] for m in stored["messages"]] == list(range(len(original["messages"])))
            for before, after in zip(original["messages"], stored["messages"], strict=True):
                assert after["role"] == before["role"]
                assert after["parts"] == before["parts"]
                if before.get("generation"):
                    assert after["generation"] == before["generation"]
    kinds = {p["type"] for c in originals for m in c["messages"] for p in m["parts"]}
    assert kinds == {"text", "tool_call", "tool_call_response", "reasoning"}


def test_import_prints_ids_and_summary(run_cli) -> None:
    result = run_cli("import", FIXTURES / "handwritten.openai.json")
    assert result.exit_code == 0
    assert result.stdout.split() == ["hw-openai-search", "hw-openai-plain", "hw-openai-reasoning"]
    assert "3 new, 0 already stored" in result.stderr
    listing = json.loads(run_cli("conversations", "--json").stdout)
    assert [c["id"] for c in listing] == result.stdout.split()
    assert listing[0]["roles"] == {"system": 1, "user": 1, "assistant": 2, "tool": 1}
    assert listing[0]["first_user_text"] == "How many vacation days do new employees get?"


def test_reimport_is_idempotent(run_cli, db_path: Path) -> None:
    sample = FIXTURES / "ragtruth-sample.conversations.jsonl"
    assert run_cli("import", sample).exit_code == 0
    before = dump(db_path)
    again = run_cli("import", sample)
    assert again.exit_code == 0
    assert "0 new, 40 already stored" in again.stderr
    assert dump(db_path) == before


def test_conflicting_reimport_is_an_error(run_cli, db_path: Path, tmp_path: Path) -> None:
    run_cli("import", FIXTURES / "handwritten.openai.json")
    before = dump(db_path)
    changed = tmp_path / "changed.jsonl"
    changed.write_text(
        json.dumps({"id": "fresh", "messages": [{"role": "user", "content": "new"}]}) + "\n"
        + json.dumps({"id": "hw-openai-plain", "messages": [{"role": "user", "content": "different"}]}) + "\n"
    )
    result = run_cli("import", changed)
    assert result.exit_code == 2
    assert "changed.jsonl:2" in result.stderr and "different content" in result.stderr
    assert dump(db_path) == before  # not even the valid first line was stored


def test_stdin_and_ids_assigned(run_cli) -> None:
    line = json.dumps({"messages": [{"role": "user", "content": "hello"}]})
    first = run_cli("import", "-", input=line + "\n").stdout.split()
    second = run_cli("import", "-", input=line + "\n").stdout.split()
    assert len(first) == len(second) == 1 and first == second  # no id: one from the content, so stored once


def test_json_array_error_names_the_line(run_cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[\n {"messages": [{"role": "user", "content": "ok"}]},\n {"messages": [{"role": "wizard", "content": "x"}]}\n]\n')
    result = run_cli("import", bad)
    assert result.exit_code == 2
    assert f"{bad}:3: message 0: role must be one of" in result.stderr


BAD_LINES = {
    "invalid JSON": '{"messages": [',
    "role must be one of": '{"messages": [{"role": "narrator", "content": "x"}]}',
    "unknown part type": '{"messages": [{"role": "user", "parts": [{"type": "video"}]}]}',
    "not valid JSON": '{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{bad"}}]}]}',
    "must be a JSON object": "[1, 2]",
}


@pytest.mark.parametrize("expected", sorted(BAD_LINES))
def test_bad_line_exits_2_and_stores_nothing(run_cli, db_path: Path, tmp_path: Path, expected: str) -> None:
    run_cli("import", FIXTURES / "handwritten.native.jsonl")
    before = dump(db_path)
    path = tmp_path / "input.jsonl"
    good = json.dumps({"id": "good", "messages": [{"role": "user", "content": "fine"}]})
    path.write_text(good + "\n\n" + BAD_LINES[expected] + "\n")
    result = run_cli("import", path)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert expected in result.stderr
    if expected != "must be a JSON object":
        assert f"{path}:3:" in result.stderr
    assert dump(db_path) == before


def test_missing_file_and_directory(run_cli, db_path: Path, tmp_path: Path) -> None:
    missing = run_cli("import", tmp_path / "nope.jsonl")
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    folder = run_cli("import", tmp_path)
    assert folder.exit_code == 2 and "not a file" in folder.stderr


def test_second_bad_file_keeps_first_unstored(run_cli, db_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    result = run_cli("import", FIXTURES / "handwritten.openai.json", bad)
    assert result.exit_code == 2
    assert json.loads(run_cli("conversations", "--json").stdout) == []


def test_duplicate_message_ids_rejected(run_cli, db_path: Path, tmp_path: Path) -> None:
    msg = {"id": "m-1", "role": "user", "parts": [{"type": "text", "content": "a"}]}
    path = tmp_path / "dup.jsonl"
    path.write_text(json.dumps({"id": "a", "messages": [msg]}) + "\n")
    assert run_cli("import", path).exit_code == 0
    path.write_text(json.dumps({"id": "b", "messages": [msg]}) + "\n")
    result = run_cli("import", path)
    assert result.exit_code == 2 and "message id 'm-1' is already stored" in result.stderr


def test_conversations_limit(run_cli) -> None:
    run_cli("import", FIXTURES / "ragtruth-sample.conversations.jsonl")
    table = run_cli("conversations", "--limit", "5").stdout.splitlines()
    assert len(table) == 2 + 5 and table[0].split()[:2] == ["id", "messages"]
    assert run_cli("conversations", "--limit", "0").exit_code == 2
