"""`gate` (issue 24): conditions, and experiments that never pass (unfinished, every evaluation failed)."""

import json

import pytest
from factories import NATIVE, SpanSpec, finish_experiment, import_fixture, new_experiment

from experiment_runner.errors import BadInputError
from experiment_runner.results.gate import Condition, parse_condition, run_gate

IDS = ["hw-weather-tools", "hw-booking-args", "hw-reasoning-math", "hw-refusal"]


def test_parse_condition() -> None:
    assert parse_condition("max", " issue_rate = 0.05") == Condition("max", "issue_rate", 0.05)
    assert parse_condition("max-increase", "label:Reasoning Error=0").metric == "label:Reasoning Error"
    assert parse_condition("max", "issue_free_share=1").name == "max issue_free_share=1"
    for bad in ("issue_rate", "=1", "label:=1", "issue_labels=1", "cost=1", "issue_rate=x"):
        with pytest.raises(BadInputError):
            parse_condition("max", bad)


def test_an_unfinished_experiment_never_passes(store, run_cli) -> None:
    import_fixture(store, NATIVE)
    experiment = new_experiment(store, IDS)
    finish_experiment(store, experiment, unfinished=[IDS[0]])
    result = run_gate(store, experiment, [Condition("max", "cost_per_1k", 1e9)])
    assert not result["passed"]
    assert result["checks"][0]["reason"] == f"experiment {experiment} is not finished: 1 of 4 item(s) pending or in progress"
    cli = run_cli("gate", experiment, "--max", "issue_rate=1")
    assert cli.exit_code == 1
    assert cli.stdout.splitlines()[0] == f"FAIL  experiment finished: experiment {experiment} is not finished: 1 of 4 item(s) pending or in progress"


def test_an_experiment_whose_evaluations_all_failed_never_passes(store, run_cli) -> None:
    import_fixture(store, NATIVE)
    experiment = new_experiment(store, IDS)
    finish_experiment(store, experiment, failed_evaluations=IDS)
    result = run_gate(store, experiment, [Condition("max", "issue_rate", 1.0)])
    reasons = [c["reason"] for c in result["checks"] if not c["passed"]]
    assert reasons == [
        f"experiment {experiment} has no completed evaluation: all 4 expected evaluation(s) failed or are missing",
        "the experiment has no evaluated message, so issue_rate judges nothing",
    ]
    assert run_cli("gate", experiment, "--max", "issue_rate=1").exit_code == 1


def test_a_baseline_that_is_unfinished_fails_the_gate_too(store) -> None:
    import_fixture(store, NATIVE)
    done, open_ = new_experiment(store, IDS, name="done"), new_experiment(store, IDS, name="open")
    finish_experiment(store, done)
    finish_experiment(store, open_, unfinished=IDS[:2])
    result = run_gate(store, done, [Condition("max-increase", "issue_rate", 0)], baseline_id=open_)
    assert [c["name"] for c in result["checks"] if not c["passed"]] == ["baseline finished"]


def test_significant_lets_a_small_increase_pass_and_json_shape(store, run_cli) -> None:
    """One more reply with an issue out of 4: an increase, but p = 1 (one discordant pair)."""
    import_fixture(store, NATIVE)
    a, b = new_experiment(store, IDS, name="a"), new_experiment(store, IDS, name="b")
    finish_experiment(store, a)
    finish_experiment(store, b, spans={IDS[0]: [SpanSpec("Fabrication", 0, 5)]})
    plain = run_gate(store, b, [Condition("max-increase", "issue_rate", 0)], baseline_id=a)
    tested = run_gate(store, b, [Condition("max-increase", "issue_rate", 0)], baseline_id=a, significant=True)
    assert not plain["passed"] and tested["passed"]
    check = tested["checks"][0]
    assert (check["value"], check["p_value"], check["significant"]) == (0.25, 1.0, False)
    assert check["reason"].endswith("; not significant")
    tokens = run_gate(store, b, [Condition("max-increase", "avg_output_tokens", 0)], baseline_id=a, significant=True)["checks"][0]
    assert tokens["passed"] and tokens["reason"] == "increase +0 <= 0 (no paired test for this metric)"
    cost = run_gate(store, b, [Condition("max-increase", "cost_per_1k", 0)], baseline_id=a)["checks"][0]  # 2 copied replies have no price
    assert not cost["passed"] and cost["reason"] == "the experiment's cost is partly unknown: no price for 2 of its 4 completed replies (counted as $0)"
    unseen = run_gate(store, b, [Condition("max-increase", "label:Reasoning Error", 0)], baseline_id=a, significant=True)["checks"][0]
    assert unseen["passed"] and unseen["p_value"] == 1.0 and "no paired test" not in unseen["reason"]
    out = json.loads(run_cli("gate", b, "--baseline", a, "--max-increase", "label:Fabrication=0", "--format", "json").stdout)
    assert set(out) == {"experiment_id", "baseline_id", "significant", "passed", "checks"} and out["passed"] is False
