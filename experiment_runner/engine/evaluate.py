"""The evaluation step of a run: one evaluator model call per reply, its reply turned into spans.

What to ask and how to read the answer is `evaluation.evaluator` (pure); this module makes the call
through `llm`, asks once more when the reply is unusable, and returns an `EvaluationOutcome`.
"""

import time
from typing import Any

from experiment_runner.engine.llm import RetryPolicy, complete
from experiment_runner.errors import ModelCallError
from experiment_runner.evaluation.evaluator import EvaluationOutcome, EvaluatorConfig, build_request, parse_reply, response_format
from experiment_runner.evaluation.spans import align_quotes


async def evaluate_message(
    config: EvaluatorConfig, messages: list[dict[str, Any]], *, policy: RetryPolicy, limiter: Any = None
) -> EvaluationOutcome:
    """Evaluate the final message of `messages`; never raises for model or reply problems."""
    started = time.perf_counter()
    tokens = [0, 0]

    def failed(reason: str, detection_ms: float | None = None) -> EvaluationOutcome:
        return EvaluationOutcome(
            "failed", config.model, tokens[0] or None, tokens[1] or None, detection_ms,
            (time.perf_counter() - started) * 1000, reason,
        )

    if not messages or messages[-1]["role"] != "assistant":
        return failed("the conversation does not end with an assistant reply to evaluate")
    request = build_request(config, messages)
    schema = response_format()
    names = [x["name"] for x in config.labels]
    problem = ""
    for _attempt in range(2):  # a reply we cannot use is asked for once more
        try:
            reply = await complete(config.model, request, api_base=config.api_base, policy=policy, limiter=limiter, response_format=schema)
        except ModelCallError as exc:
            return failed(f"evaluator call failed: {exc}")
        tokens[0] += reply.generation["input_tokens"] or 0
        tokens[1] += reply.generation["output_tokens"] or 0
        try:
            quotes, unknown = parse_reply(reply.text, names)
            break
        except ValueError as exc:
            problem = str(exc)
    else:
        return failed(f"evaluator reply unusable after 2 attempts: {problem}", reply.duration_ms)
    spans, dropped = align_quotes(messages[-1]["parts"], quotes)
    notes = []
    if dropped:
        notes.append(f"{len(dropped)} quote(s) not found in the message were dropped")
    if unknown:
        notes.append(f"{unknown} annotation(s) with labels outside the configured set were dropped")
    return EvaluationOutcome(
        "completed", config.model, tokens[0], tokens[1], round(reply.duration_ms, 3),
        round((time.perf_counter() - started) * 1000, 3), "; ".join(notes) or None, spans,
    )
