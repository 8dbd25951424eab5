"""Opt-in: a pass-through evaluation against a real OpenAI-compatible server (`-m realmodel`).

Set EXPERIMENT_RUNNER_TEST_API_BASE (e.g. http://127.0.0.1:8081/v1 for llama-cpp-python's server, see
README "Local models") and optionally EXPERIMENT_RUNNER_TEST_MODEL (default openai/smollm2). The model's
quality is not judged: the test proves the plumbing (requests accepted, replies parsed, no label dropped).
"""

import json
import os

import pytest
from conftest import FIXTURES
from conftest import query as rows

API_BASE = os.environ.get("EXPERIMENT_RUNNER_TEST_API_BASE")
MODEL = os.environ.get("EXPERIMENT_RUNNER_TEST_MODEL", "openai/smollm2")

pytestmark = [
    pytest.mark.realmodel,
    pytest.mark.skipif(not API_BASE, reason="set EXPERIMENT_RUNNER_TEST_API_BASE to a real model server to run this"),
]


def test_pass_through_evaluation_completes_against_a_real_server(run_cli, db_path, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_TIMEOUT", "600")
    sample = tmp_path / "two.jsonl"
    sample.write_text("".join((FIXTURES / "ragtruth-sample.conversations.jsonl").read_text().splitlines(keepends=True)[:2]))
    run_cli("import", sample)
    result = run_cli(
        "run", "--name", "real", "--model", MODEL, "--pass-through", "--all", "--evaluator-model", MODEL,
        "--evaluator-api-base", API_BASE, "--concurrency", "1", "--evaluator-max-tokens", "1024",
    )
    assert result.exit_code == 0, result.stderr
    evaluations = rows(db_path, "SELECT status, dropped FROM evaluation")
    assert [status for status, _ in evaluations] == ["completed", "completed"]
    assert all("unknown_label" not in json.loads(dropped or "{}") for _, dropped in evaluations)
