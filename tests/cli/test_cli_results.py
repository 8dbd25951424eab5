"""`list`, `show`, `export`, `delete` and `score` through the command line: output and exit codes."""

import json
from pathlib import Path

import pytest
from factories import RAGTRUTH_GOLD, build_finished

from experiment_runner.results.documents import ExportDocument
from experiment_runner.results.export import export_document
from experiment_runner.results.span_scores import GoldScores, SpanScore
from experiment_runner.store import open_store


def document(db_path: Path, experiment_id: str) -> ExportDocument:
    store = open_store(db_path)
    try:
        return export_document(store, experiment_id)
    finally:
        store.close()


def test_list_table(run_cli, experiment_id: str) -> None:
    result = run_cli("list")
    assert result.exit_code == 0, result.output
    header, rule, row = result.stdout.splitlines()
    assert header.split() == ["id", "name", "model", "status", "issue", "rate", "cost", "created"]
    assert row.startswith(experiment_id) and "pass-through ☔" in row and "openai/target" in row
    assert "5/6 done, 1 failed" in row and "75.0%" in row
    assert "at least $0.0003" in row  # 2 of the 5 completed replies have a cost (3.66e-05 + 0.00023)
    assert result.stderr == ""


def test_list_json_and_more_line(run_cli, experiment_id: str) -> None:
    page = json.loads(run_cli("list", "--json").stdout)
    assert set(page) == {"next_page_cursor", "query", "has_more", "items"}
    assert page["items"][0]["id"] == experiment_id and page["query"] == {"limit": 50, "cursor": None}
    assert json.loads(run_cli("list", "--json", "--limit", "1").stdout)["has_more"] is False


def test_list_prints_the_next_command_on_stderr(run_cli, db_path: Path, experiment_id: str) -> None:
    store = open_store(db_path)
    try:
        build_finished(store)
    finally:
        store.close()
    result = run_cli("list", "--limit", "1")
    assert len(result.stdout.splitlines()) == 3
    more = result.stderr.strip()
    assert more.startswith("More: experiment-runner list --cursor ")
    rest = run_cli("list", "--limit", "1", "--cursor", more.split()[-1])
    assert experiment_id in rest.stdout and rest.stderr == ""


@pytest.mark.parametrize("args", [("--limit", "0"), ("--limit", "101"), ("--cursor", "garbage")])
def test_list_bad_input_exits_2(run_cli, args) -> None:
    result = run_cli("list", *args)
    assert result.exit_code == 2 and result.stderr.startswith("Error: ")


def test_show(run_cli, experiment_id: str) -> None:
    result = run_cli("show", experiment_id)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "Experiment pass-through ☔",
        experiment_id,
        "pass-through",
        "judge-model (labels: Fabrication, Context Misattribution, Reasoning Error, Incorrect Refusal)",
        "Items: 6 (5 completed, 1 failed, 0 pending, 0 in progress)",
        "Evaluations: 4 completed of 6 expected",
        "75.0% (3 of 4 evaluated messages)",
        "issue-free messages  1",
        "tokens in            238 (47.6 per item)",
        "max 2,950 ms",
        "model call failed: HTTP 500",
    ):
        assert expected in out, expected
    label_rows = [line.split() for line in out.splitlines() if line.startswith(("Fabrication", "Incorrect Refusal"))]
    assert label_rows == [["Fabrication", "3", "75.0%"], ["Incorrect", "Refusal", "1", "25.0%"]]
    assert any(line.split() == ["book_table", "party_size", "1"] for line in out.splitlines())


def test_export_to_stdout_and_file(run_cli, db_path: Path, tmp_path: Path, experiment_id: str) -> None:
    expected = document(db_path, experiment_id)
    result = run_cli("export", experiment_id)
    assert result.exit_code == 0 and json.loads(result.stdout) == expected
    target = tmp_path / "out.json"
    result = run_cli("export", experiment_id, "-o", target)
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(target.read_text()) == expected
    kb = target.stat().st_size / 1024
    assert result.stderr.strip() == f"Wrote {target} (6 items, {kb:,.1f} KB)"


def test_delete(run_cli, experiment_id: str) -> None:
    result = run_cli("delete", experiment_id)
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout == (
        f"Deleted experiment {experiment_id} (pass-through ☔): 6 item(s), 5 evaluation(s), 4 annotation(s), "
        "5 result conversation(s); source conversations kept.\n"
    )
    assert run_cli("list", "--json").stdout.count(experiment_id) == 0


@pytest.mark.parametrize("command", ["show", "export", "delete"])
def test_unknown_id_exits_2(run_cli, db_path: Path, experiment_id: str, command: str) -> None:
    result = run_cli(command, "no-such-id")
    assert result.exit_code == 2
    assert result.stderr == f"Error: no experiment with id 'no-such-id' in store {db_path}\n" and result.stdout == ""


def test_export_unknown_id_writes_no_file(run_cli, tmp_path: Path, experiment_id: str) -> None:
    result = run_cli("export", "no-such-id", "-o", tmp_path / "out.json")
    assert result.exit_code == 2 and not (tmp_path / "out.json").exists()


def test_score_table_and_json(run_cli, experiment_id: str) -> None:
    result = run_cli("score", experiment_id, "--gold", RAGTRUTH_GOLD)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["spans", "exact", "P", "exact"]
    assert [line.split()[0] for line in lines[2:4]] == ["overall", "any"]
    # The built experiment holds two RAGTruth items: one failed (not evaluated), one issue-free.
    assert lines[-1] == (
        "Scored 1 replies; skipped 0 whose reply differs from the gold's and 1 not evaluated; "
        "38 gold lines match no item. '-': undefined (no predicted span, or no gold span, with that label)."
    )
    data = json.loads(
        run_cli("score", experiment_id, "--gold", RAGTRUTH_GOLD, "--json", "--gold-labels", "Fabrication").stdout
    )
    assert data["experiment_id"] == experiment_id and data["scored"] == 1 and data["gold_without_item"] == 38


def test_score_bad_gold_exits_2(run_cli, tmp_path: Path, experiment_id: str) -> None:
    bad = tmp_path / "gold.jsonl"
    bad.write_text('{"conversation_id": "x"}\n')
    result = run_cli("score", experiment_id, "--gold", bad)
    assert result.exit_code == 2 and result.stderr.startswith(f"Error: {bad}:1: ")


def test_score_table_shows_dash_where_a_score_is_undefined() -> None:
    from experiment_runner.cli.results import render_score

    def scores(predicted: int, gold: int, tp: int) -> dict[str, SpanScore]:
        p, r = (tp / predicted if predicted else 0.0), (tp / gold if gold else 0.0)
        s: SpanScore = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "tp_pred": tp, "predicted": predicted, "tp_gold": tp, "gold": gold}
        return {"exact": s, "overlap": s}

    result: GoldScores = {
        "messages": 3, "overall": scores(3, 2, 1), "overall_any_label": scores(3, 2, 2),
        "per_label": {"Benign": scores(2, 0, 0), "Fabrication": scores(0, 2, 0), "Other": scores(1, 2, 1)},
        "experiment_id": "e", "scored": 3, "skipped_reply_differs": 0, "skipped_not_evaluated": 0, "gold_without_item": 0,
    }
    rows = {line.split()[0]: line.split()[1:] for line in render_score(result).splitlines()[2:7]}
    assert rows["Benign"] == ["0.000", "-", "-", "0.000", "-", "-", "2", "0"]  # predicted, but no gold span: R, F1 undefined
    assert rows["Fabrication"] == ["-", "0.000", "0.000", "-", "0.000", "0.000", "0", "2"]  # gold missed: P undefined
    assert rows["Other"] == ["1.000", "0.500", "0.667", "1.000", "0.500", "0.667", "1", "2"]
