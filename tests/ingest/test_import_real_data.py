"""Import gaps with real data (issue 20 item 12, issue 21 item 11): `developer`, top-level `tools` and
`metadata`, ids from content, OTLP protobuf files, and an import summary that adds up."""

import json
from pathlib import Path
from typing import Any

from conftest import FIXTURES, dump

from experiment_runner.engine.replay import replay_request, split_reply, with_system_prompt
from experiment_runner.ingest.conversations import load_conversation
from experiment_runner.ingest.formats import normalize_conversation
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import Store

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                       "required": ["city"]},
    },
}
# The OpenAI fine-tuning / logging format: `developer` instructions, top-level `tools` and `metadata`, no id.
LOGGED: dict[str, Any] = {
    "messages": [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"zone\": \"CET\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "14:00"},
        {"role": "assistant", "content": "18 C at 14:00."},
    ],
    "tools": [WEATHER_TOOL],
    "metadata": {"customer": "acme", "ticket": 42},
}


def write_jsonl(path: Path, *objects: Any) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objects), encoding="utf-8")
    return path


def test_developer_tools_and_metadata_are_kept(store: Store, tmp_path: Path) -> None:
    (conv_id,) = import_files(store, [str(write_jsonl(tmp_path / "logged.jsonl", LOGGED))]).ids
    with store.read() as session:
        stored = load_conversation(session, conv_id)
    assert stored["messages"][0]["role"] == "developer"
    assert stored["messages"][0]["parts"] == [{"type": "text", "content": "Answer briefly."}]
    assert stored["tools"] == [WEATHER_TOOL] and stored["metadata"] == {"customer": "acme", "ticket": 42}


def test_a_conversation_without_an_id_is_stored_once(run_cli, tmp_path: Path, db_path: Path) -> None:
    path = write_jsonl(tmp_path / "logged.jsonl", LOGGED, {**LOGGED, "metadata": {"customer": "other"}})
    first = run_cli("import", path)
    assert first.exit_code == 0, first.stderr
    assert "2 new, 0 already stored." in first.stderr
    before = dump(db_path)
    again = run_cli("import", path)
    assert again.stdout == first.stdout and "0 new, 2 already stored." in again.stderr
    assert dump(db_path) == before
    assert len(set(first.stdout.split())) == 2  # other metadata, other content: another conversation


def test_a_duplicate_in_the_input_is_counted_so_the_summary_adds_up(run_cli, tmp_path: Path) -> None:
    same = {"id": "dup", "messages": [{"role": "user", "content": "hi"}]}
    result = run_cli("import", write_jsonl(tmp_path / "dups.jsonl", same, same, {"messages": [{"role": "user", "content": "x"}]}))
    assert result.exit_code == 0, result.stderr
    assert result.stderr.strip() == "Imported 3 conversation(s): 2 new, 0 already stored, 1 duplicate(s) in the input."
    other = run_cli("import", write_jsonl(tmp_path / "differs.jsonl", same, {**same, "messages": [{"role": "user", "content": "bye"}]}))
    assert other.exit_code == 2 and "conversation 'dup' differs from the one at" in other.stderr


def test_bad_tools_and_metadata_are_refused(run_cli, tmp_path: Path, db_path: Path) -> None:
    run_cli("import", FIXTURES / "handwritten.native.jsonl")
    before = dump(db_path)
    for bad, message in (({"tools": {"name": "x"}}, "conversation 'tools' must be a list"),
                         ({"tools": [{"type": "function", "function": {}}]}, "tools[0]: the function needs a 'name'"),
                         ({"metadata": ["x"]}, "conversation 'metadata' must be a JSON object")):
        result = run_cli("import", write_jsonl(tmp_path / "bad.jsonl", {**LOGGED, **bad}))
        assert result.exit_code == 2 and f"bad.jsonl:1: {message}" in result.stderr, result.stderr
    assert dump(db_path) == before


def test_export_shows_the_source_conversations_tools_and_metadata(run_cli, tmp_path: Path) -> None:
    run_cli("import", write_jsonl(tmp_path / "logged.jsonl", LOGGED))
    result = run_cli("run", "--name", "pt", "--model", "openai/x", "--pass-through", "--all")
    assert result.exit_code == 0, result.output
    document = json.loads(run_cli("export", result.stdout.split()[-1]).stdout)
    source = document["items"][0]["source_conversation"]
    assert source["tools"] == [WEATHER_TOOL] and source["metadata"] == {"customer": "acme", "ticket": 42}
    assert "tools" not in document["items"][0]["result_conversation"]


def test_replay_declares_the_stored_tools_and_sends_developer(run_cli, fake_llm, tmp_path: Path) -> None:
    history_only = {**LOGGED, "messages": LOGGED["messages"][:-1]}  # ends with the tool results: the target answers
    run_cli("import", write_jsonl(tmp_path / "logged.jsonl", history_only))
    result = run_cli("run", "--name", "replay", "--model", "openai/fake-target", "--api-base", fake_llm.api_base, "--all")
    assert result.exit_code == 0, result.output
    (body,) = fake_llm.requests()
    # We hand litellm `developer`; it passes it on to OpenAI's o-series and sends `system` to other models.
    assert body["messages"][0]["content"] == "Answer briefly." and body["messages"][0]["role"] in ("developer", "system")
    declared = {t["function"]["name"]: t["function"] for t in body["tools"]}
    assert declared["get_weather"] == WEATHER_TOOL["function"]  # the stored definition: description, required
    assert declared["get_time"]["parameters"] == {"type": "object", "properties": {"zone": {"type": "string"}}}  # rebuilt


def test_the_replay_request_keeps_the_developer_role() -> None:
    native = normalize_conversation(LOGGED)
    history, _ = split_reply(with_system_prompt(native["messages"], "Be verbose."))
    request = replay_request(history, native["tools"])
    assert request["messages"][0] == {"role": "developer", "content": "Be verbose."}
    assert [t["function"]["name"] for t in request["tools"]] == ["get_weather", "get_time"]
    assert replay_request(history)["tools"][0]["function"] == {  # without stored tools: rebuilt from the calls
        "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_system_prompt_replaces_the_developer_message(run_cli, fake_llm, tmp_path: Path) -> None:
    run_cli("import", write_jsonl(tmp_path / "logged.jsonl", {"messages": LOGGED["messages"][:2]}))
    result = run_cli("run", "--name", "sp", "--model", "openai/fake-target", "--api-base", fake_llm.api_base, "--all",
                     "--system-prompt", "Be verbose.")
    assert result.exit_code == 0, result.output
    (body,) = fake_llm.requests()
    assert body["messages"][0]["content"] == "Be verbose." and len(body["messages"]) == 2
    assert "tools" not in body


def test_import_reads_otlp_protobuf_files(run_cli, tmp_path: Path, db_path: Path) -> None:
    from_json = run_cli("import", FIXTURES / "openai-v2.otlp.jsonl")
    assert from_json.exit_code == 0
    before = dump(db_path)
    renamed = tmp_path / "trace.bin"  # not UTF-8 and no .pb suffix: still read as protobuf
    renamed.write_bytes((FIXTURES / "openai-v2.otlp.pb").read_bytes())
    for path in (FIXTURES / "openai-v2.otlp.pb", renamed):
        result = run_cli("import", path)
        assert result.exit_code == 0, result.stderr
        assert result.stdout == from_json.stdout and "0 new, 3 already stored" in result.stderr
    assert dump(db_path) == before


def test_length_prefixed_protobuf_files_of_the_collector_import(run_cli, tmp_path: Path) -> None:
    data = (FIXTURES / "openai-v2.otlp.pb").read_bytes()
    framed = tmp_path / "collector.pb"
    framed.write_bytes(len(data).to_bytes(4, "big") + data)
    result = run_cli("import", framed)
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.split()) == 3


def test_a_binary_file_that_is_not_protobuf_is_one_error_line(run_cli, tmp_path: Path, db_path: Path) -> None:
    run_cli("import", FIXTURES / "handwritten.native.jsonl")
    before = dump(db_path)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    result = run_cli("import", junk)
    assert result.exit_code == 2 and result.stderr.startswith(f"Error: {junk}: not UTF-8 text") and result.stderr.count("\n") == 1
    bad_pb = tmp_path / "bad.pb"
    bad_pb.write_bytes(b"\xff\x00 not protobuf")
    result = run_cli("import", bad_pb)
    assert result.exit_code == 2 and f"{bad_pb}:1: not a protobuf ExportTraceServiceRequest" in result.stderr
    assert dump(db_path) == before
