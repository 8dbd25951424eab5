"""The report shows what the evaluator did, as `show` does: failures, drops, tokens, cost (issues 13, 17)."""

import json

from conftest import FIXTURES


def test_the_report_lists_failed_evaluations_dropped_annotations_and_evaluator_tokens(run_cli, fake_llm, tmp_path) -> None:
    run_cli("import", FIXTURES / "handwritten.openai.json")
    bad = {"label": "Rudeness", "text": "x", "explanation": "e", "message_part_index": 0, "tool_name": None, "parameter_name": None}
    fake_llm.configure(scripts=[
        {"model": "judge", "match": "Is 221 prime?", "reply": {"content": "not json"}},
        {"model": "judge", "reply": {"content": json.dumps({"annotations": [bad]})}},
    ])
    result = run_cli("run", "--name", "e", "--model", "openai/t", "--api-base", fake_llm.api_base, "--all", "--pass-through",
                     "--evaluator-model", "openai/judge", "--evaluator-api-base", fake_llm.api_base)
    experiment_id = result.stdout.strip().splitlines()[-1]
    out = tmp_path / "r.html"
    assert run_cli("report", experiment_id, "-o", out).exit_code == 0
    page = out.read_text()
    assert "Evaluations: 2 of 3 expected" in page and " · 1 failed" in page
    assert "Annotations dropped: unknown label 2" in page
    assert "Latest errors of failed evaluations" in page and "evaluator reply unusable after 2 attempts" in page
    assert "Evaluator tokens in " in page and "cost unknown" in page and "structured output json_schema" in page
