"""One experiment spec (issue 22): built once, validated in one place, stored as a row and read back as itself,
the REST body derived from it, and the same errors from a dry run as from creating."""

import json
from pathlib import Path
from typing import Any, get_args

import pytest
from conftest import FIXTURES, dump
from conftest import query as rows
from fastapi.testclient import TestClient

from experiment_runner.cli import error_line
from experiment_runner.engine.experiments import create_experiment, create_reevaluation, get_experiment
from experiment_runner.engine.spec import (
    PACKED,
    ExperimentSettings,
    ExperimentSpec,
    HostedSettings,
    ReevaluationSpec,
    ResponseFormat,
)
from experiment_runner.engine.structured import SETTINGS
from experiment_runner.errors import BadInputError, StoreError
from experiment_runner.evaluation.evaluator import DEFAULT_LABELS
from experiment_runner.ingest.importing import import_files
from experiment_runner.server.app import create_app
from experiment_runner.server.schemas import CreateExperiment
from experiment_runner.store.tables import Experiment

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
RULES = [{"label": "Hedge", "regex": "maybe", "flags": "i"}]
LABELS = {"labels": [{"name": "Wrong", "description": "Says something false."}], "domain_context": "Weather."}


def seed_body(fake_llm: Any, ids: list[str], **extra: Any) -> dict[str, Any]:
    """A create-experiment body whose models live on the fake server."""
    return {"name": "baseline", "model": "openai/target", "conversation_ids": ids, "api_base": fake_llm.api_base,
            "evaluator_model": "openai/judge", "evaluator_api_base": fake_llm.api_base, **extra}


def full_spec(ids: list[str]) -> ExperimentSpec:
    """A spec with every setting away from its default."""
    return ExperimentSpec(
        name="every setting", model="openai/target", conversation_ids=ids, system_prompt_override="Be brief.",
        reasoning_config={"effort": "low"}, output_schema=[{"name": "answer", "type": "str", "is_list": True}],  # type: ignore[list-item]
        api_base="http://127.0.0.1:1/v1", evaluator_model="openai/judge", evaluator_api_base="http://127.0.0.1:2/v1",
        labels=LABELS, response_format="json_object", evaluator_response_format="prompt",  # type: ignore[arg-type]
        evaluator_max_tokens=512, max_cost_usd=2.5, rules=RULES,
    )


def test_a_spec_goes_to_a_row_and_comes_back_the_same() -> None:
    spec = full_spec(["a", "b"])
    row = spec.to_row(experiment_id="e", created_at="2026-01-01T00:00:00.000000Z", runner="cli")
    assert ExperimentSpec.from_row(row) == spec
    assert row.labels == {**LABELS, "rules": RULES}  # the labels column also holds the rules, as older versions stored them
    assert row.structured_output == {"target": {"setting": "json_object"}, "evaluator": {"setting": "prompt", "max_tokens": 512}}
    assert row.output_schema == [{"name": "answer", "type": "str", "is_list": True, "is_optional": False}]
    plain = ExperimentSpec(name="n", model="m", conversation_ids=["a"])
    assert ExperimentSpec.from_row(plain.to_row(experiment_id="p", created_at="t")) == plain


def test_a_row_whose_settings_cannot_be_read_is_a_store_error_naming_the_setting() -> None:
    row = ExperimentSpec(name="n", model="m", conversation_ids=["a"]).to_row(experiment_id="p", created_at="t")
    row.labels = {"labels": ["fact"]}  # never written by a release: labels are objects with a description
    with pytest.raises(StoreError, match=r"experiment p has stored settings this release cannot read \(labels\.labels\.0\)"):
        ExperimentSpec.from_row(row)


def test_every_setting_is_stored_in_a_column_of_its_name_or_packed() -> None:
    """A new setting must reach the row: a column of its own name, or one of the packed JSON columns."""
    columns = set(Experiment.model_fields)
    assert set(ExperimentSpec.model_fields) - PACKED <= columns
    assert PACKED <= set(ExperimentSpec.model_fields)


def test_a_stored_experiment_reads_back_as_the_spec_it_was_created_from(store) -> None:
    ids = import_files(store, [str(SAMPLE)]).ids[:3]
    spec = full_spec([ids[0], ids[1], ids[0]])  # listed twice: run once
    assert spec.conversation_ids == ids[:2]
    experiment_id = create_experiment(store, spec, check_models=False)
    assert ExperimentSpec.from_row(get_experiment(store, experiment_id)) == spec
    assert rows(store, "SELECT count(*) FROM item WHERE experiment_id = ?", experiment_id) == [(2,)]


def test_the_evaluator_settings_come_from_the_spec() -> None:
    evaluator = full_spec(["a"]).evaluator()
    assert evaluator is not None
    assert (evaluator.model, evaluator.api_base, evaluator.max_tokens, evaluator.response_format) == (
        "openai/judge", "http://127.0.0.1:2/v1", 512, "prompt")
    assert evaluator.labels == tuple(LABELS["labels"]) and evaluator.domain_context == "Weather."
    default = ExperimentSpec(name="n", model="m", conversation_ids=["a"], evaluator_model="j").evaluator()
    assert default is not None and default.labels == DEFAULT_LABELS
    assert ExperimentSpec(name="n", model="m", conversation_ids=["a"]).evaluator() is None


def test_the_rest_body_is_the_spec_plus_its_own_flag() -> None:
    """No hand-written copy: the body's fields are the settings' (same descriptions), with the hosted API's
    limit of 100 conversations and the request's `max_cost_unpriced_ok`; `rules` stay CLI-only."""
    assert set(CreateExperiment.model_fields) == set(ExperimentSettings.model_fields) | {"max_cost_unpriced_ok"}
    assert set(ExperimentSpec.model_fields) == set(ExperimentSettings.model_fields) | {"rules"}
    for name, field in ExperimentSettings.model_fields.items():
        assert CreateExperiment.model_fields[name].description == field.description, name
    body = CreateExperiment.model_validate({"name": "n", "model": "m", "conversation_ids": ["a", "a", "b"], "max_cost_usd": 1})
    assert body.spec() == ExperimentSpec(name="n", model="m", conversation_ids=["a", "b"], max_cost_usd=1)
    assert get_args(ResponseFormat) == SETTINGS
    assert list(body.spec().hosted()) == list(HostedSettings.__annotations__)  # the export's order


@pytest.mark.parametrize(
    ("change", "field", "cli_says"),
    [
        ({"name": ""}, "name", "Error: name must be 1 to 255 characters"),
        ({"model": "  "}, "model", "Error: model must be a non-empty litellm model name"),
        ({"evaluator_max_tokens": 0}, "evaluator_max_tokens", "Error: --evaluator-max-tokens: Input should be greater than or equal to 1"),
        ({"response_format": "xml"}, "response_format", "Error: --response-format: Input should be 'auto', 'json_schema', 'json_object' or 'prompt'"),
        ({"system_prompt_override": 3}, "system_prompt_override", "Error: --system-prompt: Input should be a valid string"),
        ({"max_cost_usd": float("nan")}, "max_cost_usd", "Error: max_cost_usd must be a finite amount of USD above 0, got nan"),
        ({"evaluator_api_base": "http://x"}, "evaluator_model", "Error: an evaluator API base needs an evaluator model"),
        ({"pass_through": True, "reasoning_config": {"effort": "low"}}, "pass_through", "Error: pass-through copies the existing replies"),
        ({"labels": {"labels": [{"name": "A", "description": "a"}, {"name": "a", "description": "b"}]}}, "labels", "Error: labels: label 'a' appears twice"),
    ],
)
def test_an_invalid_setting_is_our_error_naming_its_field(change: dict[str, Any], field: str, cli_says: str) -> None:
    """pydantic's errors become `BadInputError(field=...)` in `from_input`: the CLI names the option, the API the loc."""
    with pytest.raises(BadInputError) as refused:
        ExperimentSpec.from_input({"name": "n", "model": "m", "conversation_ids": ["a"]} | change)
    assert refused.value.field == field and refused.value.loc == ("body", field)
    assert error_line(refused.value).startswith(cli_says)


@pytest.mark.parametrize(
    ("change", "loc", "needle"),
    [
        ({"pass_through": True, "reasoning_config": {"effort": "low"}}, ["body", "pass_through"], "pass-through copies"),
        ({"evaluator_max_tokens": 0}, ["body", "evaluator_max_tokens"], "greater than or equal to 1"),
        ({"response_format": "xml"}, ["body", "response_format"], "'auto'"),
        ({"max_cost_usd": "nan"}, ["body", "max_cost_usd"], "finite amount of USD"),
    ],
)
def test_the_api_names_the_same_fields(store, fake_llm, db_path: Path, change: dict[str, Any], loc: list[str], needle: str) -> None:
    ids = import_files(store, [str(SAMPLE)]).ids[:2]
    before = dump(db_path)
    with TestClient(create_app(store)) as client:
        for dry_run in ("false", "true"):
            response = client.post(f"/v1/experiments?dry_run={dry_run}", json=seed_body(fake_llm, ids) | change)
            assert response.status_code == 422, response.text
            assert any(e["loc"] == loc and needle in e["msg"] for e in response.json()["detail"]), response.json()
    assert dump(db_path) == before


@pytest.mark.parametrize(
    "args",
    [
        ["--conversation", "no-such-conversation"],  # the store's check
        ["--all", "--model", "openai/gpt-4o-mini", "--api-base", ""],  # the preflight: no OPENAI_API_KEY
        ["--all", "--evaluator-model", "nonsense-provider-model"],  # the preflight: no provider
    ],
)
def test_a_dry_run_and_creating_give_the_same_error(run_cli, db_path: Path, monkeypatch, args: list[str]) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("EXPERIMENT_RUNNER_API_KEY", raising=False)
    assert run_cli("import", str(SAMPLE)).exit_code == 0
    before = dump(db_path)
    base = ["run", "--name", "same", "--model", "openai/target", "--api-base", "http://127.0.0.1:9/v1"]
    dry, real = run_cli(*base, *args, "--dry-run"), run_cli(*base, *args)
    assert dry.exit_code == real.exit_code == 2
    assert dry.stderr == real.stderr and dry.stderr.startswith("Error: "), (dry.stderr, real.stderr)
    assert dump(db_path) == before


def test_the_api_dry_run_and_create_give_the_same_error(store, fake_llm, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("EXPERIMENT_RUNNER_API_KEY", raising=False)
    ids = import_files(store, [str(SAMPLE)]).ids[:2]
    with TestClient(create_app(store)) as client:
        for body in (seed_body(fake_llm, [*ids, "nope"]), seed_body(fake_llm, ids, model="openai/gpt-4o-mini", api_base=None)):
            dry = client.post("/v1/experiments?dry_run=true", json=body)
            real = client.post("/v1/experiments", json=body)
            assert dry.status_code == real.status_code == 422
            assert dry.json() == real.json()


def test_reevaluate_and_its_dry_run_give_the_same_error(run_cli, experiment_id: str, tmp_path: Path) -> None:
    empty = tmp_path / "none.json"
    empty.write_text("[]")
    for args in (["--rules", str(empty)], ["--evaluator-api-base", "http://127.0.0.1:9/v1", "--rules", str(empty)]):
        dry, real = run_cli("reevaluate", experiment_id, *args, "--dry-run"), run_cli("reevaluate", experiment_id, *args)
        assert dry.exit_code == real.exit_code == 2
        assert dry.stderr == real.stderr and dry.stderr.startswith("Error: "), (dry.stderr, real.stderr)


def test_a_reevaluation_spec_resolves_against_its_source(store) -> None:
    ids = import_files(store, [str(SAMPLE)]).ids[:2]
    source = ExperimentSpec(name="src", model="openai/target", conversation_ids=ids, system_prompt_override="S", rules=RULES)
    kept = ReevaluationSpec(evaluator_model="openai/judge").resolve(source, ids, ReevaluationSpec().rules_for(source))
    assert (kept.name, kept.model, kept.pass_through, kept.system_prompt_override, kept.rules) == (
        "src (re-evaluated)", "openai/target", True, "S", RULES)
    with pytest.raises(BadInputError) as nothing:
        ReevaluationSpec(rules=[]).rules_for(source)  # drops the source's rules and names no evaluator
    assert nothing.value.field == "evaluator_model" and "--rules" in error_line(nothing.value)
    with pytest.raises(BadInputError) as endpoint:
        ReevaluationSpec.from_input({"evaluator_api_base": "http://x", "rules": RULES})
    assert endpoint.value.field == "evaluator_model"
    with pytest.raises(BadInputError) as long_name:
        ReevaluationSpec(evaluator_model="j").resolve(source.model_copy(update={"name": "n" * 250}), ids, [])
    assert str(long_name.value) == "name must be 1 to 255 characters"


def test_a_reevaluation_row_is_the_resolved_spec(store, experiment_id: str) -> None:
    source = ExperimentSpec.from_row(get_experiment(store, experiment_id))
    again = create_reevaluation(store, experiment_id, ReevaluationSpec(evaluator_model="openai/judge-2", evaluator_max_tokens=64),
                                check_models=False)
    spec = ExperimentSpec.from_row(get_experiment(store, again))
    assert spec.model == source.model and spec.pass_through and spec.evaluator_max_tokens == 64
    assert spec.name == f"{source.name} (re-evaluated)" and spec.evaluator_model == "openai/judge-2"
    assert json.loads(rows(store, "SELECT structured_output FROM experiment WHERE id = ?", again)[0][0])["evaluator"] == {
        "setting": "auto", "max_tokens": 64}
