"""Rule evaluators on `run` and `reevaluate` (issue 24): no model call, spans at exact offsets, in every metric."""

import json
import re
from pathlib import Path
from typing import Any

import pytest
from factories import NATIVE, RAGTRUTH

from experiment_runner.results.export import export_document
from experiment_runner.store import open_store

RULES: list[dict[str, Any]] = [
    {"label": "Hedge", "regex": r"\b(may|might|could)\b", "flags": "i", "name": "no hedging"},
    {"label": "Format", "json_valid": True},
    {"label": "Leak", "not_contains": "passage"},
]


def write_rules(tmp_path: Path, rules: list[dict[str, Any]] = RULES) -> Path:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    return path


def last_id(result: Any) -> str:
    assert result.exit_code == 0, result.output
    return str(result.stdout.split()[-1])


def expected_spans(reply: str) -> list[tuple[str, int, int]]:
    """What the rules must find, computed independently of the rules module."""
    found = [("Hedge", m.start(), m.end()) for m in re.finditer(r"\b(may|might|could)\b", reply, re.IGNORECASE)]
    found.append(("Format", 0, len(reply)))  # no sample reply is JSON
    start = reply.find("passage")
    while start >= 0:
        found.append(("Leak", start, start + len("passage")))
        start = reply.find("passage", start + 1)
    return found


def test_a_rules_only_run_of_the_sample_calls_no_model_and_stores_exact_spans(run_cli, db_path: Path, tmp_path: Path) -> None:
    assert run_cli("import", RAGTRUTH).exit_code == 0
    dry = run_cli("run", "--name", "rules", "--model", "openai/target", "--pass-through", "--all", "--rules", write_rules(tmp_path), "--dry-run", "--json")
    estimate = json.loads(dry.stdout)
    assert estimate["evaluator_calls"] == 0 and estimate["target_calls"] == 0 and estimate["estimated_cost_usd"] == 0
    assert estimate["rules"] == {"count": 3, "evaluations": 40, "estimated_cost_usd": 0.0}
    text = run_cli("run", "--name", "rules", "--model", "openai/target", "--pass-through", "--all", "--rules", write_rules(tmp_path), "--dry-run").stdout
    assert "Rules: 3 rule(s) check 40 reply(ies) with no model call, for free." in text
    assert re.search(r"3 rule\(s\)\s+rules\s+0\s+0\s+0\s+0\s+\$0\.0000", text)  # calls, cached, input, output

    # no --evaluator-model and no server: any model call would fail the run
    experiment = last_id(run_cli("run", "--name", "rules", "--model", "openai/target", "--pass-through", "--all", "--rules", write_rules(tmp_path)))
    store = open_store(db_path)
    document = export_document(store, experiment)
    stored = total = 0
    for item in document["items"]:
        result = item["result_conversation"]
        assert result is not None
        reply = result["messages"][-1]
        evaluation = document["evaluations"][reply["id"]]
        assert evaluation["status"] == "completed" and evaluation["model"] == "rules" and evaluation["input_tokens"] is None
        first = reply["parts"][0]
        assert first["type"] == "text"
        text_reply = first["content"]
        got = [(a["label"], a["start_offset"], a["end_offset"]) for a in evaluation["annotations"]]
        assert sorted(got) == sorted(expected_spans(text_reply))
        for a in evaluation["annotations"]:
            assert text_reply[a["start_offset"]:a["end_offset"]] == a["text"]
            assert a["explanation"] is not None and a["explanation"].startswith(("rule 1 \"no hedging\" (regex /", "rule 2 (json_valid)", "rule 3 (not_contains"))
        stored += len(got)
        total += len(expected_spans(text_reply))
    metrics = document["experiment"]["metrics"]
    assert stored == total == metrics["total_issues"] and metrics["issue_rate"] == 1.0  # every reply breaks json_valid
    assert document["experiment"]["evaluations_received"] == 40
    print(f"rules-only run: 40 replies, {stored} rule spans, labels {metrics['issue_labels']}")
    shown = run_cli("show", experiment).stdout
    assert "  rules            3 (labels: Hedge, Format, Leak; no model call)" in shown


def test_rules_with_an_evaluator_model_join_its_evaluation(run_cli, fake_llm, db_path: Path, tmp_path: Path) -> None:
    """Tool-call arguments too: the booking conversation's party size is matched inside its tool call."""
    assert run_cli("import", NATIVE).exit_code == 0
    fake_llm.configure(scripts=[{"model": "judge", "match": "", "reply": {"content": json.dumps({"annotations": []})}}])
    rules = write_rules(tmp_path, [{"label": "Number", "regex": r"\d+"}])
    experiment = last_id(run_cli("run", "--name", "both", "--model", "openai/target", "--pass-through", "--all",
                                 "--evaluator-model", "openai/judge", "--evaluator-api-base", fake_llm.api_base, "--rules", rules))
    assert fake_llm.request_count == 4  # one evaluator call per reply, none for the rules
    document = export_document(open_store(db_path), experiment)
    evaluations = list(document["evaluations"].values())
    assert {e["model"] for e in evaluations} == {"openai/judge"}
    tool_spans = [a for e in evaluations for a in e["annotations"] if a["tool_name"]]
    assert tool_spans, "the rules found numbers inside tool-call arguments"
    for item in document["items"]:
        result = item["result_conversation"]
        assert result is not None
        reply = result["messages"][-1]
        for a in document["evaluations"][reply["id"]]["annotations"]:
            part = reply["parts"][a["message_part_index"]]
            if a["parameter_name"]:
                assert part["type"] == "tool_call"
                value = part["arguments"][a["parameter_name"]]
                target = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            else:
                assert part["type"] in ("text", "reasoning")
                target = part["content"]
            assert target[a["start_offset"]:a["end_offset"]] == a["text"] and a["text"].isdigit()
    assert document["experiment"]["metrics"]["total_issues"] == sum(len(e["annotations"]) for e in evaluations) > 0


def test_reevaluate_and_resume_reuse_the_stored_rules(run_cli, db_path: Path, tmp_path: Path) -> None:
    assert run_cli("import", NATIVE).exit_code == 0
    source = last_id(run_cli("run", "--name", "src", "--model", "openai/target", "--pass-through", "--all",
                             "--rules", write_rules(tmp_path, [{"label": "Number", "regex": r"\d+"}])))
    inherited = last_id(run_cli("reevaluate", source))  # no evaluator model, no --rules: the source's rules
    store = open_store(db_path)
    issues = [export_document(store, e)["experiment"]["metrics"]["total_issues"] for e in (source, inherited)]
    assert issues[0] == issues[1] > 0
    (tmp_path / "none.json").write_text("[]")
    dropped = run_cli("reevaluate", source, "--rules", tmp_path / "none.json")
    assert dropped.exit_code == 2 and "Error: a re-evaluation needs an evaluator model or --rules" in dropped.stderr
    replaced = last_id(run_cli("reevaluate", source, "--rules", write_rules(tmp_path, [{"label": "Q", "contains": "zzz"}])))
    labels = export_document(store, replaced)["experiment"]["metrics"]["issue_labels"]
    assert list(labels) == ["Q"]
    dry = json.loads(run_cli("reevaluate", source, "--dry-run", "--json").stdout)
    assert dry["rules"]["count"] == 1 and dry["evaluator_calls"] == 0


def test_resume_evaluates_with_the_stored_rules(run_cli, store, tmp_path: Path) -> None:
    """An interrupted rules run: its items left pending are evaluated by the rules stored with it."""
    from factories import import_fixture

    from experiment_runner.engine.experiments import create_experiment
    from experiment_runner.engine.spec import ExperimentSpec
    from experiment_runner.evaluation.rules import load_rules

    import_fixture(store, NATIVE)
    spec = ExperimentSpec(name="r", model="openai/target", conversation_ids=["hw-weather-tools", "hw-refusal"], pass_through=True,
                          rules=load_rules(write_rules(tmp_path, [{"label": "Number", "regex": r"\d+"}])))
    experiment = create_experiment(store, spec, check_models=False)
    assert run_cli("resume", experiment).exit_code == 0
    document = export_document(store, experiment)
    assert document["experiment"]["evaluations_received"] == 2
    assert all(e["model"] == "rules" for e in document["evaluations"].values())


@pytest.mark.parametrize(("content", "message"), [("{", "not a readable JSON file"), ('[{"label": "x"}]', "rule 1: needs exactly one of")])
def test_a_bad_rules_file_is_one_error_line(run_cli, tmp_path: Path, content: str, message: str) -> None:
    assert run_cli("import", NATIVE).exit_code == 0
    (tmp_path / "bad.json").write_text(content)
    result = run_cli("run", "--name", "x", "--model", "openai/t", "--pass-through", "--all", "--rules", tmp_path / "bad.json")
    assert result.exit_code == 2 and result.stderr.startswith("Error: ") and message in result.stderr
