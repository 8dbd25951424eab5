"""What a REST caller may ask of the server: endpoints it may make the server call, dry runs, budgets."""

from typing import Any

import pytest
from conftest import FIXTURES, dump
from fastapi.testclient import TestClient
from test_server import seed_body

from experiment_runner.errors import BadInputError
from experiment_runner.ingest.importing import import_files
from experiment_runner.server.allowlist import check_api_base
from experiment_runner.server.app import create_app


def imported(store: Any) -> list[str]:
    return import_files(store, [str(FIXTURES / "ragtruth-sample.conversations.jsonl")]).ids[:3]


def test_a_non_loopback_api_base_is_refused_unless_allowed(store, fake_llm, db_path) -> None:
    ids = imported(store)
    before = dump(db_path)
    with TestClient(create_app(store)) as client:
        response = client.post("/v1/experiments", json=seed_body(fake_llm, ids, api_base="http://169.254.169.254/v1"))
    assert response.status_code == 422
    (detail,) = response.json()["detail"]
    assert detail["loc"] == ["body", "api_base"] and "not allowed" in detail["msg"]
    assert dump(db_path) == before
    with TestClient(create_app(store, allow_api_bases=("http://models.internal:8000/v1",))) as client:
        ok = client.post("/v1/experiments?dry_run=true", json=seed_body(fake_llm, ids, api_base="http://models.internal:8000/v1"))
        other_port = client.post("/v1/experiments?dry_run=true", json=seed_body(fake_llm, ids, api_base="http://models.internal:9000/v1"))
    assert ok.status_code == 200 and other_port.status_code == 422


def test_a_dry_run_estimates_and_stores_nothing(store, fake_llm, db_path) -> None:
    ids = imported(store)
    before = dump(db_path)
    with TestClient(create_app(store)) as client:
        response = client.post("/v1/experiments?dry_run=true", json=seed_body(fake_llm, ids))
    assert response.status_code == 200
    estimate = response.json()
    assert estimate["items"] == 3 and estimate["target_calls"] == 3 and estimate["evaluator_calls"] == 3
    assert estimate["estimated_input_tokens"] > 0 and estimate["unpriced_models"] == ["openai/judge", "openai/target"]
    assert estimate["estimated_cost_usd"] is None
    assert dump(db_path) == before and fake_llm.request_count == 0


def test_a_budget_with_an_unpriced_model_is_refused(store, fake_llm) -> None:
    ids = imported(store)
    with TestClient(create_app(store)) as client:
        refused = client.post("/v1/experiments", json=seed_body(fake_llm, ids, max_cost_usd=1.0))
        allowed = client.post("/v1/experiments", json=seed_body(fake_llm, ids, max_cost_usd=1.0, max_cost_unpriced_ok=True))
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "max_cost_usd"]
    assert allowed.status_code == 201


def test_a_budget_that_is_not_a_finite_amount_is_422_not_500(store, fake_llm, db_path) -> None:
    """NaN compares false with everything, so `"max_cost_usd": NaN` would switch the cap off (issue 21)."""
    import json

    ids = imported(store)
    before = dump(db_path)
    with TestClient(create_app(store), raise_server_exceptions=False) as client:
        answers = {}
        for value in ("NaN", "Infinity", "-Infinity", '"nan"', '"inf"', "-1", "0"):
            body = json.dumps(seed_body(fake_llm, ids, model="openai/gpt-4o-mini", evaluator_model="openai/gpt-4o-mini"))
            body = body[:-1] + f', "max_cost_usd": {value}}}'
            answers[value] = client.post("/v1/experiments", content=body, headers={"content-type": "application/json"})
    for value, response in answers.items():
        assert response.status_code == 422, (value, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", "max_cost_usd"], value
    assert "finite amount of USD" in answers["NaN"].json()["detail"][0]["msg"]
    assert dump(db_path) == before and fake_llm.request_count == 0


@pytest.mark.parametrize(
    ("api_base", "allowed"),
    [
        ("http://models.internal:8000/v1", True),
        ("http://models.internal:8000/v1/chat/../", True),
        ("http://models.internal:8000/v1//x/./", True),
        ("http://models.internal:8000/v1/../admin", False),
        ("http://models.internal:8000/v1/%2e%2e/admin", False),
        ("http://models.internal:8000/v1/..", False),
        ("http://models.internal:8000/v1..", False),
        ("http://models.internal:8000/v2", False),
    ],
)
def test_the_allowlist_compares_normalised_paths(api_base: str, allowed: bool) -> None:
    """A `..` in a URL under an allowed one must not escape its path prefix (issue 21, item 6)."""
    if allowed:
        check_api_base(api_base, ("http://models.internal:8000/v1/",), "api_base")
        return
    with pytest.raises(BadInputError) as refused:
        check_api_base(api_base, ("http://models.internal:8000/v1/",), "api_base")
    assert refused.value.loc == ("body", "api_base") and "not allowed" in str(refused.value)


def test_api_errors_name_body_fields_and_the_cli_names_options(store, fake_llm, run_cli, monkeypatch) -> None:
    """The same core error reads `model ...` through the API and `--model ...` on the command line."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("EXPERIMENT_RUNNER_API_KEY", raising=False)
    ids = imported(store)
    body = seed_body(fake_llm, ids) | {"model": "openai/gpt-4o-mini", "api_base": None}
    with TestClient(create_app(store)) as client:
        response = client.post("/v1/experiments", json=body)
        budget = client.post("/v1/experiments", json=seed_body(fake_llm, ids, max_cost_usd=1.0))
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body", "model"], "msg": "model 'openai/gpt-4o-mini': OPENAI_API_KEY is not set (or give api_base for a local server)", "type": "value_error"}
    ]
    (detail,) = budget.json()["detail"]
    assert detail["loc"] == ["body", "max_cost_usd"] and detail["msg"].startswith("max_cost_usd cannot be kept")
    assert "max_cost_unpriced_ok" in detail["msg"] and "--" not in detail["msg"]
    cli = run_cli("run", "--name", "x", "--model", "openai/gpt-4o-mini", "--all")
    assert cli.exit_code == 2
    assert "Error: --model 'openai/gpt-4o-mini': OPENAI_API_KEY is not set (or give --api-base for a local server)" in cli.stderr
