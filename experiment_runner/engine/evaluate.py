"""The evaluation step of a run: one evaluator model call per reply, its reply turned into spans.

What to ask and how to read the answer is `evaluation.evaluator` (pure); this module makes the call
through `llm` in the structured-output mode the endpoint accepts (`structured.FormatLearner`), with a
bounded `max_tokens`, asks once more when the reply is unusable or cut off, and returns an
`EvaluationOutcome` that says what was dropped and why.
"""

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from experiment_runner.conversation import JSONObject, Message, OpenAIMessage, drop_words
from experiment_runner.engine.cache import ResponseCache
from experiment_runner.engine.failures import Reachability
from experiment_runner.engine.llm import Completion, RetryPolicy, complete
from experiment_runner.engine.structured import FormatLearner, request_kwargs, with_instructions
from experiment_runner.errors import ModelCallError
from experiment_runner.evaluation.evaluator import (
    RESPONSE_NAME,
    EvaluationOutcome,
    EvaluatorConfig,
    build_request,
    parse_reply,
    reply_schema,
)
from experiment_runner.evaluation.rules import RULES_MODEL, Rule, apply_rules, merge_spans
from experiment_runner.evaluation.spans import align_quotes

DEFAULT_MAX_TOKENS = 4096


@dataclass
class _Tally:
    """Tokens and cost over the attempts of one evaluation."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    cached_calls: int = 0
    cost_saved_usd: float | None = None
    started: float = field(default_factory=time.perf_counter)

    def add(self, reply: Completion) -> None:
        self.input_tokens += reply.generation["input_tokens"] or 0
        self.output_tokens += reply.generation["output_tokens"] or 0
        if (cost := reply.generation.get("cost_usd")) is not None:
            self.cost_usd = (self.cost_usd or 0.0) + cost
        if reply.generation.get("cache_hit"):
            self.cached_calls += 1
            self.cost_saved_usd = (self.cost_saved_usd or 0.0) + (reply.generation.get("cost_saved_usd") or 0.0)

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def failed(self, model: str, reason: str, detection_ms: float | None, mode: str) -> EvaluationOutcome:
        """A failed evaluation with what its attempts used."""
        return EvaluationOutcome("failed", model, self.input_tokens or None, self.output_tokens or None, detection_ms,
                                 self.elapsed_ms(), reason, cost_usd=self.cost_usd, response_format=mode,
                                 cached_calls=self.cached_calls, cost_saved_usd=self.cost_saved_usd)


async def evaluate_reply(
    config: EvaluatorConfig | None,
    rules: Sequence[Rule],
    messages: list[Message],
    *,
    policy: RetryPolicy,
    limiter: Any = None,
    learner: FormatLearner | None = None,
    reachability: Reachability | None = None,
    cache: ResponseCache | None = None,
) -> EvaluationOutcome:
    """The evaluation of the final message: the evaluator model's spans (when one is configured), then the
    rules' spans (no model call). Rules alone give an evaluation whose model is `rules`. When the model's
    evaluation fails, the evaluation is failed (the rules run again with it on `resume --retry-failed`).

    Never raises for model or reply problems, but a systematic failure (the endpoint is down, the key is
    wrong) is raised as `ModelCallError`, so the run can stop instead of recording it for every item."""
    if config is None:
        return rules_evaluation(rules, messages)
    tally = _Tally()
    learner = learner or FormatLearner()

    def failed(reason: str, detection_ms: float | None = None) -> EvaluationOutcome:
        return tally.failed(config.model, reason, detection_ms, learner.mode)

    if not messages or messages[-1]["role"] != "assistant":
        return failed("the conversation does not end with an assistant reply to evaluate")
    names = [x["name"] for x in config.labels]
    max_tokens = config.max_tokens or DEFAULT_MAX_TOKENS

    async def send(mode: str) -> Completion:
        call_messages, kwargs = evaluator_call(config, messages, mode)
        return await complete(
            config.model, call_messages, api_base=config.api_base, policy=policy, limiter=limiter,
            reachability=reachability, cache=cache, **kwargs,
        )

    problem = ""
    for _attempt in range(2):  # a reply we cannot use (or one cut off by max_tokens) is asked for once more
        try:
            reply = await learner.call(send)
        except ModelCallError as exc:
            if exc.systematic:
                raise
            return failed(f"evaluator call failed: {exc}")
        tally.add(reply)
        if "length" in (reply.generation["finish_reasons"] or []):
            problem = f"reply cut off at max_tokens ({max_tokens}); raise --evaluator-max-tokens"
            continue
        try:
            quotes, unknown = parse_reply(reply.text, names)
            break
        except ValueError as exc:
            problem = str(exc)
            if cache is not None:
                cache.forget(reply)  # asking again must sample again, not read this reply back
    else:
        return failed(f"evaluator reply unusable after 2 attempts: {problem}", reply.duration_ms)
    return with_rule_spans(completed(config, messages, reply, quotes, unknown, tally, learner.mode), rules, messages)


def outcome_of_reply(config: EvaluatorConfig, messages: list[Message], reply: Completion | None, mode: str,
                     error: str | None = None) -> EvaluationOutcome:
    """The evaluation a single reply gives, with no second ask (a batch job's answer): `error` when the request
    failed, failed when the reply was cut off or cannot be read, else completed."""
    tally = _Tally()
    if reply is None:
        return tally.failed(config.model, f"evaluator call failed: {error or 'no answer'}", None, mode)
    tally.add(reply)
    max_tokens = config.max_tokens or DEFAULT_MAX_TOKENS
    if "length" in (reply.generation["finish_reasons"] or []):
        return tally.failed(config.model, f"reply cut off at max_tokens ({max_tokens}); raise --evaluator-max-tokens", None, mode)
    try:
        quotes, unknown = parse_reply(reply.text, [x["name"] for x in config.labels])
    except ValueError as exc:
        return tally.failed(config.model, f"evaluator reply unusable: {exc}", reply.duration_ms, mode)
    return completed(config, messages, reply, quotes, unknown, tally, mode)


def evaluator_call(config: EvaluatorConfig, messages: list[Message], mode: str) -> tuple[list[OpenAIMessage], JSONObject]:
    """The messages and litellm arguments of the evaluator call for `messages`' final reply in `mode`.

    One builder for the live call, the batch job's request body and the dry run's cache look-up."""
    schema = reply_schema([x["name"] for x in config.labels], messages[-1]["parts"])
    kwargs = {"max_tokens": config.max_tokens or DEFAULT_MAX_TOKENS, **request_kwargs(mode, RESPONSE_NAME, schema)}
    return with_instructions(mode, build_request(config, messages), schema), kwargs


def completed(
    config: EvaluatorConfig, messages: list[Message], reply: Completion, quotes: list[Any], unknown: int, tally: _Tally, mode: str
) -> EvaluationOutcome:
    """The completed evaluation of a usable reply: its quotes aligned to spans, what was dropped and why."""
    spans, dropped = align_quotes(messages[-1]["parts"], quotes)
    reasons: Counter[str] = Counter(d.kind for d in dropped)
    if unknown:
        reasons["unknown_label"] = unknown
    return EvaluationOutcome(
        "completed", config.model, tally.input_tokens, tally.output_tokens, round(reply.duration_ms, 3),
        tally.elapsed_ms(), dropped_note(reasons), spans, dict(sorted(reasons.items())), tally.cost_usd, mode,
        tally.cached_calls, tally.cost_saved_usd,
    )


def with_rule_spans(outcome: EvaluationOutcome, rules: Sequence[Rule], messages: list[Message]) -> EvaluationOutcome:
    """A completed model evaluation with the rules' spans merged in (a failed one unchanged).

    Shared by the live run and batch jobs, whose evaluator answers come back later."""
    found = apply_rules(rules, messages[-1]["parts"]) if rules and outcome.status == "completed" else []
    if not found:
        return outcome
    return dataclasses.replace(outcome, spans=merge_spans(outcome.spans, found))


def rules_evaluation(rules: Sequence[Rule], messages: list[Message]) -> EvaluationOutcome:
    """The evaluation by rules alone (no evaluator model): model `rules`, no call."""
    started = time.perf_counter()
    reply_ok = bool(messages) and messages[-1]["role"] == "assistant"
    found = apply_rules(rules, messages[-1]["parts"]) if rules and reply_ok else []
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    if not reply_ok:
        return EvaluationOutcome("failed", RULES_MODEL, total_duration_ms=elapsed,
                                 error_message="the conversation does not end with an assistant reply to evaluate")
    return EvaluationOutcome("completed", RULES_MODEL, detection_duration_ms=elapsed, total_duration_ms=elapsed, spans=found)


def dropped_note(reasons: Counter[str] | dict[str, int]) -> str | None:
    """The evaluation's note on dropped annotations, e.g. '2 annotation(s) dropped: 1 with labels outside ...'."""
    if not reasons:
        return None
    total = sum(reasons.values())
    detail = "; ".join(f"{n} {drop_words(kind).note}" for kind, n in sorted(reasons.items()))
    return f"{total} annotation(s) dropped: {detail}"
