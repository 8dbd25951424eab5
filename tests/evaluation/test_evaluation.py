"""The evaluator (issue 5): prompt, reply parsing, spans through the real pipeline, re-evaluation."""

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import FIXTURES, query

from experiment_runner.errors import BadInputError
from experiment_runner.evaluation.evaluator import DEFAULT_LABELS, EvaluatorConfig, build_request, check_labels, parse_reply
from experiment_runner.fixtures.fakellm import FakeLLM

TOOLS = FIXTURES / "handwritten.native.jsonl"
OPENAI = FIXTURES / "handwritten.openai.json"
NAMES = [x["name"] for x in DEFAULT_LABELS]


def ann(label: str, text: str, part: int = 0, tool: str | None = None, param: str | None = None) -> dict:
    return {"label": label, "text": text, "explanation": f"{label}: {text}", "message_part_index": part,
            "tool_name": tool, "parameter_name": param}


def judge_says(match: str, *annotations: dict, content: str | None = None) -> dict:
    reply = {"content": content if content is not None else json.dumps({"annotations": list(annotations)})}
    return {"model": "judge", "match": match, "reply": reply}


def annotations(db: Path, experiment_id: str) -> list[dict]:
    found = query(db, """SELECT c.id, a.label, a.text, a.message_part_index, a.start_offset, a.end_offset, a.tool_name,
                                a.parameter_name, m.parts
                         FROM annotation a JOIN evaluation e ON e.id = a.evaluation_id JOIN item i ON i.id = e.item_id
                         JOIN conversation c ON c.id = i.source_conversation_id JOIN message m ON m.id = e.message_id
                         WHERE i.experiment_id = ? ORDER BY i.position, a.position""", experiment_id)
    keys = ("conversation", "label", "text", "part", "start", "end", "tool", "param", "parts")
    return [dict(zip(keys, (*row[:8], json.loads(row[8])), strict=True)) for row in found]


def evaluate_all(run_cli, fake: FakeLLM, *extra: str) -> str:
    result = run_cli("run", "--name", "e", "--model", "openai/target", "--api-base", fake.api_base, "--all",
                     "--evaluator-model", "openai/judge", "--evaluator-api-base", fake.api_base, *extra)
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


# --- pure parts -------------------------------------------------------------------------------


def test_parse_reply_repairs_fences_and_trailing_text() -> None:
    body = json.dumps({"annotations": [ann("Fabrication", "x")]})
    for text in (body, f"```json\n{body}\n```", f"Here you go:\n{body}\nHope that helps."):
        quotes, unknown = parse_reply(text, NAMES)
        assert [q.text for q in quotes] == ["x"] and unknown == 0


def test_parse_reply_counts_unknown_labels_and_fixes_label_case() -> None:
    text = json.dumps({"annotations": [ann("fabrication", "a"), ann("Rudeness", "b"), ann("REASONING ERROR", "c")]})
    quotes, unknown = parse_reply(text, NAMES)
    assert [(q.label, q.text) for q in quotes] == [("Fabrication", "a"), ("Reasoning Error", "c")]
    assert unknown == 1


@pytest.mark.parametrize("text", ["", "no json here", '{"annotations": "none"}', '{"annotations": [{"label": 1}]}', "{broken"])
def test_parse_reply_rejects_unusable_replies(text: str) -> None:
    with pytest.raises(ValueError):
        parse_reply(text, NAMES)


def test_request_defines_labels_and_shows_parts_verbatim() -> None:
    messages = [json.loads(line) for line in TOOLS.read_text().splitlines()][1]["messages"]  # hw-booking-args
    config = EvaluatorConfig("openai/judge", labels=({"name": "Wrong Size", "description": "Party size differs."},),
                             domain_context="Restaurant bookings.")
    system, user = build_request(config, messages)
    assert system["content"] is not None and user["content"] is not None
    assert system["role"] == "system" and "**Wrong Size**: Party size differs." in system["content"]
    assert "Fabrication" not in system["content"] and "Restaurant bookings." in system["content"]
    assert "[system]\nYou book restaurant tables." in user["content"]
    assert "[part 0] text:\nBooking it now." in user["content"]
    assert "[part 1] tool call `book_table`" in user["content"] and "  - party_size: 6" in user["content"]
    assert "  - name: Zoë Martín" in user["content"]


def test_default_labels_have_real_definitions() -> None:
    assert NAMES == ["Fabrication", "Context Misattribution", "Reasoning Error", "Incorrect Refusal"]
    assert all(len(x["description"]) > 150 for x in DEFAULT_LABELS)


@pytest.mark.parametrize("data", [{}, {"labels": []}, {"labels": [{"name": "A"}]}, {"labels": [{"name": "A", "description": "x"}, {"name": "a", "description": "y"}]}])
def test_bad_label_files_are_rejected(data: object) -> None:
    with pytest.raises(BadInputError):
        check_labels(data)


# --- through the pipeline ---------------------------------------------------------------------


def test_quotes_become_spans_that_slice_the_message(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    run_cli("import", OPENAI)
    fake_llm.configure(scripts=[
        judge_says("starting on their first day", ann("Context Misattribution", "30 vacation days"),
                   ann("Fabrication", "starting on their FIRST   day"), ann("Rudeness", "New"), ann("Fabrication", "not in the reply")),
        judge_says("Booking it now.", ann("Fabrication", "6", part=1, tool="book_table", param="party_size")),
        judge_says("It arrives at 17:15.", ann("Reasoning Error", "17:15")),
        judge_says("can't give medical advice", ann("Incorrect Refusal", "I’m sorry, but I can’t give medical advice.")),
    ])
    experiment_id = evaluate_all(run_cli, fake_llm, "--pass-through")
    found = {(a["conversation"], a["label"]): a for a in annotations(db_path, experiment_id)}
    assert len(found) == 5  # 2 + 1 + 1 + 1: the unknown label and the unfindable quote are dropped
    for a in found.values():
        part = a["parts"][a["part"]]
        target = part["content"] if part["type"] == "text" else str(part["arguments"][a["param"]])
        assert target[a["start"]:a["end"]] == a["text"]
    assert found[("hw-openai-search", "Fabrication")]["text"] == "starting on their first day"  # the message's own characters
    booking = found[("hw-booking-args", "Fabrication")]
    assert (booking["part"], booking["start"], booking["end"], booking["tool"], booking["param"]) == (1, 0, 1, "book_table", "party_size")
    assert found[("hw-refusal", "Incorrect Refusal")]["text"] == "I'm sorry, but I can't give medical advice."
    (note,) = query(db_path, """SELECT e.error_message FROM evaluation e JOIN item i ON i.id = e.item_id
                                WHERE i.source_conversation_id = 'hw-openai-search' AND i.experiment_id = ?""", experiment_id)
    assert note[0] == "2 annotation(s) dropped: 1 whose quote is not in the reply; 1 with labels outside the configured set"
    assert fake_llm.stats()["requests"] == 7  # pass-through: evaluator calls only
    evaluation = query(db_path, "SELECT status, model, input_tokens, output_tokens, detection_duration_ms, total_duration_ms FROM evaluation")[0]
    assert evaluation[0] == "completed" and evaluation[1] == "openai/judge" and evaluation[2] > 0 and evaluation[3] > 0
    assert 0 < evaluation[4] <= evaluation[5]
    request = next(r for r in fake_llm.requests() if "Booking it now." in json.dumps(r))
    assert request["response_format"]["json_schema"]["strict"] is True
    assert request["response_format"]["json_schema"]["schema"]["required"] == ["annotations"]


def test_malformed_evaluator_json_fails_the_evaluation_not_the_item(run_cli, fake_llm, db_path) -> None:
    run_cli("import", OPENAI)
    fake_llm.configure(scripts=[judge_says("Is 221 prime?", content="{'annotations': [oops")])
    experiment_id = evaluate_all(run_cli, fake_llm)
    assert dict(query(db_path, "SELECT status, count(*) FROM item GROUP BY status")) == {"completed": 3}
    rows = dict(query(db_path, """SELECT i.source_conversation_id, e.status || ': ' || coalesce(e.error_message, '')
                                  FROM evaluation e JOIN item i ON i.id = e.item_id WHERE i.experiment_id = ?""", experiment_id))
    assert rows["hw-openai-reasoning"].startswith("failed: evaluator reply unusable after 2 attempts")
    assert rows["hw-openai-plain"] == "completed: "
    judge_calls = [r for r in fake_llm.requests() if r["model"] == "judge" and "Is 221 prime?" in json.dumps(r, ensure_ascii=False)]
    assert len(judge_calls) == 2  # asked once more before giving up


def test_evaluator_errors_are_recorded_on_the_evaluation(run_cli, fake_llm, db_path) -> None:
    run_cli("import", OPENAI)
    fake_llm.configure(scripts=[{"model": "judge", "reply": {"status": 400}}])
    evaluate_all(run_cli, fake_llm)
    rows = query(db_path, "SELECT e.status, e.error_message, i.status FROM evaluation e JOIN item i ON i.id = e.item_id")
    assert len(rows) == 3 and all(r[0] == "failed" and r[1].startswith("evaluator call failed: HTTP 400") and r[2] == "completed" for r in rows)


def test_custom_labels_file(run_cli, fake_llm, db_path, tmp_path) -> None:
    run_cli("import", OPENAI)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": [{"name": "Policy Breach", "description": "Says something HR policy forbids."}],
                                  "domain_context": "An HR helpdesk."}))
    fake_llm.configure(scripts=[judge_says("starting on their first day", ann("Policy Breach", "30 vacation days"), ann("Fabrication", "30"))])
    experiment_id = evaluate_all(run_cli, fake_llm, "--labels", labels, "--pass-through")
    assert [(a["label"], a["text"]) for a in annotations(db_path, experiment_id)] == [("Policy Breach", "30 vacation days")]
    system = next(r for r in fake_llm.requests() if r["model"] == "judge")["messages"][0]["content"]
    assert "**Policy Breach**: Says something HR policy forbids." in system and "An HR helpdesk." in system


def test_reevaluate_makes_no_target_calls_and_leaves_the_old_experiment_alone(run_cli, fake_llm, db_path, tmp_path) -> None:
    run_cli("import", TOOLS)
    fake_llm.configure(scripts=[judge_says("Simulated reply", ann("Fabrication", "Simulated"))])
    old = evaluate_all(run_cli, fake_llm)

    def old_rows() -> list[tuple]:
        tables = ("SELECT * FROM experiment WHERE id = ?",
                  "SELECT * FROM item WHERE experiment_id = ? ORDER BY id",
                  "SELECT e.* FROM evaluation e JOIN item i ON i.id = e.item_id WHERE i.experiment_id = ? ORDER BY e.id",
                  "SELECT a.* FROM annotation a JOIN evaluation e ON e.id = a.evaluation_id JOIN item i ON i.id = e.item_id WHERE i.experiment_id = ? ORDER BY a.id",
                  "SELECT m.* FROM message m JOIN item i ON i.result_conversation_id = m.conversation_id WHERE i.experiment_id = ? ORDER BY m.id")
        return [row for sql in tables for row in query(db_path, sql, old)]

    before = old_rows()
    fake_llm.reset()
    fake_llm.configure(scripts=[judge_says("Simulated reply", ann("Reasoning Error", "reply"))])
    # the same judge asked the same: --no-cache, else the response cache would answer with the old verdicts
    result = run_cli("reevaluate", old, "--evaluator-model", "openai/judge", "--evaluator-api-base", fake_llm.api_base, "--no-cache")
    assert result.exit_code == 0, result.stderr
    new = result.stdout.strip().splitlines()[-1]
    assert new != old and old_rows() == before
    assert {r["model"] for r in fake_llm.requests()} == {"judge"} and fake_llm.request_count == 4
    shared = query(db_path, """SELECT count(*) FROM item a JOIN item b ON a.result_conversation_id = b.result_conversation_id
                               WHERE a.experiment_id = ? AND b.experiment_id = ?""", old, new)[0][0]
    assert shared == 4  # the same result conversations, verbatim
    assert {a["label"] for a in annotations(db_path, new)} == {"Reasoning Error"}
    (source,) = query(db_path, "SELECT source_experiment_id, pass_through FROM experiment WHERE id = ?", new)
    assert source == (old, 1)
    assert run_cli("reevaluate", "nope", "--evaluator-model", "openai/judge").exit_code == 2


def test_resume_finishes_missing_evaluations_without_replaying(run_cli, fake_llm, db_path) -> None:
    run_cli("import", TOOLS)
    experiment_id = evaluate_all(run_cli, fake_llm)
    # The state a crash leaves between committing a reply and its evaluation.
    conn = sqlite3.connect(db_path)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("DELETE FROM evaluation WHERE item_id IN (SELECT id FROM item WHERE position < 2)")
    conn.execute("UPDATE item SET status = 'in_progress' WHERE position < 2")
    conn.commit()
    conn.close()
    fake_llm.reset()
    # --no-cache: the deleted evaluations' verdicts are still in the response cache, which would answer them
    assert run_cli("resume", experiment_id, "--no-cache").exit_code == 0
    assert [r["model"] for r in fake_llm.requests()] == ["judge", "judge"]
    assert dict(query(db_path, "SELECT status, count(*) FROM item GROUP BY status")) == {"completed": 4}
    assert query(db_path, "SELECT count(*) FROM evaluation")[0][0] == 4


def test_retry_failed_redoes_failed_evaluations(run_cli, fake_llm, db_path) -> None:
    run_cli("import", OPENAI)
    fake_llm.configure(scripts=[{"model": "judge", "match": "Is 221 prime?", "reply": {"status": 500}}])
    experiment_id = evaluate_all(run_cli, fake_llm)
    assert query(db_path, "SELECT count(*) FROM evaluation WHERE status = 'failed'")[0][0] == 1
    fake_llm.configure(scripts=[])
    fake_llm.reset()
    assert run_cli("resume", experiment_id, "--retry-failed").exit_code == 0
    assert [r["model"] for r in fake_llm.requests()] == ["judge"]
    assert query(db_path, "SELECT status, count(*) FROM evaluation GROUP BY status") == [("completed", 3)]


def test_show_says_what_the_evaluator_dropped_and_which_evaluations_failed(run_cli, fake_llm) -> None:
    run_cli("import", OPENAI)
    fake_llm.configure(scripts=[
        judge_says("Is 221 prime?", content="not json at all"),
        judge_says("", ann("Rudeness", "x"), ann("Fabrication", "words that are not in any reply")),
    ])
    experiment_id = evaluate_all(run_cli, fake_llm, "--pass-through")
    shown = run_cli("show", experiment_id).stdout
    assert "Evaluations: 2 completed of 3 expected, 1 failed" in shown
    assert "annotations dropped  4 (quote not found in the reply 2, label outside the configured set 2)" in shown
    assert "every annotation the evaluator returned was dropped" in shown
    assert "latest errors of failed evaluations:" in shown and "evaluator reply unusable after 2 attempts" in shown
    assert "structured output    json_schema (setting auto)" in shown
