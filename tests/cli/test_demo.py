"""`experiment-runner demo`: the Quickstart's first command, end to end on bundled data."""

import json
from pathlib import Path

from experiment_runner.results.export import load_export_schema


def test_demo_runs_replay_and_evaluation_and_writes_a_valid_export(run_cli, tmp_path: Path) -> None:
    import jsonschema

    out = tmp_path / "demo"
    result = run_cli("demo", "--output-dir", out)
    assert result.exit_code == 0, result.stderr
    assert "Items: 40 (40 completed, 0 failed" in result.stdout
    assert "Evaluations: 40 completed of 40 expected" in result.stdout
    assert "valid against export.schema.json" in result.stdout
    assert "local simulations" in result.stdout and "--model openai/gpt-4o-mini" in result.stdout
    overall = next(line for line in result.stdout.splitlines() if line.startswith("overall "))
    assert overall.split()[1:4] == ["1.000", "1.000", "1.000"]  # the simulated evaluator returns the human labels
    report = (out / "demo-report.html").read_text()
    assert "Report: " in result.stdout and "\\u003cmark class" in report  # highlighted replies, escaped in the data blob
    export = json.loads((out / "demo-export.json").read_text())
    jsonschema.Draft202012Validator(load_export_schema(), format_checker=jsonschema.FormatChecker()).validate(export)
    assert export["experiment"]["metrics"]["total_issues"] > 0
    assert not export["experiment"]["pass_through"]  # replay: the target model was called
    generations = [i["result_conversation"]["messages"][-1]["generation"] for i in export["items"]]
    assert all(g["model"] == "openai/demo-target" and g["input_tokens"] > 0 for g in generations)
    again = run_cli("demo", "--output-dir", out)  # a second demo re-uses the imported sample
    assert again.exit_code == 0
    assert len(json.loads(run_cli("list", "--json").stdout)["items"]) == 2
