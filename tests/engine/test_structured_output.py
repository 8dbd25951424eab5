"""Structured output on servers that do not take json_schema, learned once per run (issue 13)."""

import json

import anyio
import pytest
from conftest import FIXTURES
from conftest import query as rows

from experiment_runner.conversation import OpenAIMessage
from experiment_runner.engine.structured import FALLBACK, FormatLearner, request_kwargs, with_instructions
from experiment_runner.errors import ModelCallError
from experiment_runner.evaluation.evaluator import DEFAULT_LABELS

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
NAMES = [x["name"] for x in DEFAULT_LABELS]


def judge_requests(fake) -> list[dict]:
    return [r for r in fake._records_json()["requests"] if r["body"]["model"] == "judge"]


def pass_through(run_cli, fake, *extra: str):
    result = run_cli(
        "run", "--name", "p", "--model", "openai/target", "--pass-through", "--all", "--evaluator-model", "openai/judge",
        "--evaluator-api-base", fake.api_base, *extra,
    )
    return result, (result.stdout.strip().splitlines() or [""])[-1]


def test_llama_cpp_python_mode_costs_a_rejected_request_per_slot_and_completes_every_evaluation(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    fake_llm.configure(imitate="llama-cpp-python")
    result, experiment_id = pass_through(run_cli, fake_llm, "--concurrency", "4")
    assert result.exit_code == 0, result.stderr
    requests = judge_requests(fake_llm)
    rejected = [r for r in requests if r["status"] == 500]
    # the first calls try json_schema together: at most one rejection per call slot, never one per item
    assert 1 <= len(rejected) <= 4 and all(r["body"]["response_format"]["type"] == "json_schema" for r in rejected)
    assert len(requests) == 40 + len(rejected) and requests[0]["body"]["response_format"]["type"] == "json_schema"
    later = [r["body"]["response_format"] for r in requests if r["status"] == 200]
    assert all(f["type"] == "json_object" for f in later)
    assert later[0]["schema"]["properties"]["annotations"]["items"]["properties"]["label"]["enum"] == NAMES
    assert rows(db_path, "SELECT status, count(*) FROM evaluation GROUP BY status") == [("completed", 40)]
    (settings,) = rows(db_path, "SELECT structured_output FROM experiment WHERE id = ?", experiment_id)[0]
    assert json.loads(settings)["evaluator"] == {"setting": "auto", "used": "json_object"}


def test_a_pinned_mode_is_used_as_it_is(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    fake_llm.configure(imitate="llama-cpp-python")
    result, _ = pass_through(run_cli, fake_llm, "--evaluator-response-format", "json_schema", "--concurrency", "2")
    assert result.exit_code == 0
    requests = judge_requests(fake_llm)
    assert len(requests) == 40 and all(r["status"] == 500 for r in requests)  # a validation error is never retried
    failed = rows(db_path, "SELECT DISTINCT status, error_message LIKE 'evaluator call failed: HTTP 500: 1 validation error:%' FROM evaluation")
    assert failed == [("failed", 1)]


def test_the_request_is_bounded_and_restricted_to_what_we_accept(run_cli, fake_llm) -> None:
    run_cli("import", SAMPLE)
    result, _ = pass_through(run_cli, fake_llm, "--evaluator-max-tokens", "512")
    assert result.exit_code == 0
    body = judge_requests(fake_llm)[0]["body"]
    assert body["max_tokens"] == 512
    item = body["response_format"]["json_schema"]["schema"]["properties"]["annotations"]["items"]["properties"]
    assert item["label"]["enum"] == NAMES and item["message_part_index"]["enum"] == [0]


def test_a_reply_cut_off_by_max_tokens_is_asked_again_then_reported(run_cli, fake_llm, db_path) -> None:
    run_cli("import", SAMPLE)
    fake_llm.configure(scripts=[{"model": "judge", "reply": {"content": '{"annotations": [', "finish_reason": "length"}}])
    result, _ = pass_through(run_cli, fake_llm)
    assert result.exit_code == 0
    assert len(judge_requests(fake_llm)) == 80  # each asked twice
    (error,) = rows(db_path, "SELECT DISTINCT error_message FROM evaluation")[0]
    assert "cut off at max_tokens (4096)" in error


@pytest.mark.parametrize("setting", ["bogus"])
def test_an_unknown_mode_is_refused(run_cli, setting: str) -> None:
    result = run_cli("run", "--name", "x", "--model", "openai/t", "--all", "--evaluator-response-format", setting)
    assert result.exit_code == 2


def test_the_learner_walks_the_modes_in_order_and_reuses_what_worked() -> None:
    tried: list[str] = []

    async def send(mode: str) -> str:
        tried.append(mode)
        if mode != "prompt":
            raise ModelCallError(f"HTTP 400: {mode} not supported in response_format", format_rejected=True)
        return "ok"

    async def main() -> None:
        learner = FormatLearner()
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(learner.call, send)
        assert learner.mode == "prompt" and learner.settled

    anyio.run(main)
    assert tried == [*FALLBACK, "prompt", "prompt", "prompt", "prompt"]  # probed once, then 4 calls in the learned mode


def test_the_first_calls_go_out_together_and_later_modes_are_probed_once() -> None:
    tried: list[str] = []
    together = {"now": 0, "most": 0}

    async def send(mode: str) -> str:
        tried.append(mode)
        together["now"] += 1
        together["most"] = max(together["most"], together["now"])
        await anyio.sleep(0.01)  # a request on the wire: the other callers run meanwhile
        together["now"] -= 1
        if mode in ("json_schema", "json_object"):
            raise ModelCallError(f"HTTP 400: {mode} not supported in response_format", format_rejected=True)
        return "ok"

    async def main(learner: FormatLearner) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(learner.call, send)

    learner = FormatLearner()
    anyio.run(main, learner)
    assert together["most"] == 5  # nobody waited for a probe: the five calls were on the wire at once
    assert learner.mode == "json_object_plain" and learner.settled and len(learner.rejected) == 2
    # five refusals of the first mode (one per caller), one of the next, then the mode that works for all five
    assert tried == ["json_schema"] * 5 + ["json_object"] + ["json_object_plain"] * 5


def test_a_server_that_takes_the_first_mode_never_makes_a_caller_wait() -> None:
    async def send(mode: str) -> str:
        await anyio.sleep(0.01)
        return mode

    async def main(learner: FormatLearner) -> list[str]:
        got: list[str] = []

        async def one() -> None:
            got.append(await learner.call(send))

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(one)
        return got

    learner = FormatLearner()
    assert anyio.run(main, learner) == ["json_schema"] * 3 and learner.settled and not learner.rejected


def test_a_learned_mode_from_an_earlier_run_is_not_probed_again() -> None:
    learner = FormatLearner("auto", learned="json_object")
    assert learner.settled and learner.mode == "json_object"


def test_other_errors_do_not_move_to_the_next_mode() -> None:
    async def send(mode: str) -> str:
        raise ModelCallError("HTTP 500: boom", retryable=True)

    learner = FormatLearner()
    with pytest.raises(ModelCallError):
        anyio.run(learner.call, send)
    assert learner.mode == "json_schema" and not learner.settled


def test_modes_build_the_right_arguments_and_instructions() -> None:
    schema = {"type": "object"}
    assert request_kwargs("json_schema", "n", schema)["response_format"]["json_schema"]["strict"] is True
    assert request_kwargs("json_object", "n", schema) == {"response_format": {"type": "json_object", "schema": schema}}
    assert request_kwargs("json_object_plain", "n", schema) == {"response_format": {"type": "json_object"}}
    assert request_kwargs("prompt", "n", schema) == {}
    messages: list[OpenAIMessage] = [{"role": "user", "content": "Hi"}]
    assert with_instructions("json_schema", messages, schema) == messages
    prompted = with_instructions("prompt", messages, schema)[-1]["content"]
    assert prompted is not None and prompted.startswith("Hi\n\nAnswer with one JSON object only")
