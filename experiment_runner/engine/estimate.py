"""What a run would cost, before it runs (`run --dry-run`), and whether a model has a known price.

Every request the run would send is built with the real code (replay for the target, the evaluator's
template for the evaluator) and its input tokens counted with litellm's token counter for that model.
Output tokens are estimated: for the target, the recorded final reply's length where the conversation
has one (its recorded `output_tokens`, else the counted text), else `DEFAULT_TARGET_OUTPUT_TOKENS`;
for the evaluator, `DEFAULT_EVALUATOR_OUTPUT_TOKENS`. The reply schema sent as `response_format` is not
counted (some servers add it to the prompt, others turn it into a grammar). Prices come from litellm's price list; a model
it has no price for is reported as unpriced (its cost unknown, never $0). Requests the response cache would
answer (`cache_probe`) are counted as `cached_calls`, with no tokens and $0. Nothing is stored or called.

The same requests give the budget its per-item reservation (`item_bound`): the most one item can cost,
with output at a stated bound instead of an estimate (cache hits are not foreseen: the reservation is
settled with what the item really cost, $0 for a hit).
"""

import functools
import json
import logging
from collections.abc import Sized
from dataclasses import dataclass, field
from typing import Any, TypedDict

from experiment_runner.conversation import Conversation, JSONObject, Message, OpenAIMessage, ToolDefinition
from experiment_runner.engine.batch import batch_cost
from experiment_runner.engine.cache_probe import CacheProbe
from experiment_runner.engine.evaluate import DEFAULT_MAX_TOKENS as EVALUATOR_MAX_TOKENS
from experiment_runner.engine.experiments import (
    ExperimentSpec,
    check_known,
    check_spec,
    completed_results,
    preflight,
    reevaluation_rules,
    spec_view,
)
from experiment_runner.engine.llm import check_model, litellm_module
from experiment_runner.engine.replay import replay_request, split_reply, with_system_prompt
from experiment_runner.engine.structured import with_instructions
from experiment_runner.errors import BadInputError, Field
from experiment_runner.evaluation.evaluator import EvaluatorConfig, build_request, reply_schema
from experiment_runner.store import Store
from experiment_runner.store.queries.conversations import require_conversation
from experiment_runner.store.queries.experiments import require_experiment

log = logging.getLogger(__name__)

DEFAULT_TARGET_OUTPUT_TOKENS = 500
DEFAULT_EVALUATOR_OUTPUT_TOKENS = 400
FALLBACK_OUTPUT_BOUND = 16384  # a target reply's bound for a model litellm knows no output limit of
EVALUATOR_ATTEMPTS = 2  # evaluate.py asks once more when a reply is unusable or cut off


class ModelEstimateDict(TypedDict):
    role: str
    calls: int
    cached_calls: int
    estimated_input_tokens: int
    estimated_output_tokens: int
    estimated_cost_usd: float | None


class RulesEstimate(TypedDict):
    count: int
    evaluations: int
    estimated_cost_usd: float


class EstimateDict(TypedDict):
    """`run --dry-run --json`: the totals, per model, the models with no known price, the rules."""

    items: int
    target_calls: int
    evaluator_calls: int
    cached_calls: int
    estimated_input_tokens: int
    estimated_output_tokens: int
    estimated_cost_usd: float | None
    estimated_priced_cost_usd: float
    per_model: dict[str, ModelEstimateDict]
    unpriced_models: list[str]
    batch: bool
    rules: RulesEstimate


@dataclass(frozen=True)
class ItemPlan:
    """What a run sends for each item, as far as its price depends on it."""

    model: str
    pass_through: bool
    system_prompt: str | None
    target_schema: JSONObject | None
    evaluator: EvaluatorConfig | None


@dataclass
class ModelEstimate:
    """The calls, tokens and cost one model would see."""

    model: str
    role: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    cached_calls: int = 0  # of `calls`: answered by the response cache (no tokens, $0)

    def as_dict(self) -> ModelEstimateDict:
        return {"role": self.role, "calls": self.calls, "cached_calls": self.cached_calls, "estimated_input_tokens": self.input_tokens,
                "estimated_output_tokens": self.output_tokens, "estimated_cost_usd": self.cost_usd}


@dataclass
class Estimate:
    """The whole run: per model and in total."""

    items: int
    target: ModelEstimate | None
    evaluator: ModelEstimate | None
    per_model: dict[str, ModelEstimate] = field(default_factory=dict)
    batch: bool = False  # priced at litellm's batch prices (`run --batch`)
    rules: int = 0  # rule evaluators (no model call, free)
    rule_evaluations: int = 0  # replies the rules check

    def as_dict(self) -> EstimateDict:
        """The `--json` shape: totals, per model, and which models have no known price."""
        models = list(self.per_model.values())
        unpriced = sorted({m.model for m in models if m.cost_usd is None})
        priced = [m.cost_usd for m in models if m.cost_usd is not None]
        return {
            "items": self.items,
            "target_calls": self.target.calls if self.target else 0,
            "evaluator_calls": self.evaluator.calls if self.evaluator else 0,
            "cached_calls": sum(m.cached_calls for m in models),
            "estimated_input_tokens": sum(m.input_tokens for m in models),
            "estimated_output_tokens": sum(m.output_tokens for m in models),
            "estimated_cost_usd": None if unpriced else round(sum(priced), 6),
            "estimated_priced_cost_usd": round(sum(priced), 6),
            "per_model": {m.model: m.as_dict() for m in models},
            "unpriced_models": unpriced,
            "batch": self.batch,
            "rules": {"count": self.rules, "evaluations": self.rule_evaluations, "estimated_cost_usd": 0.0},
        }


def price(model: str, input_tokens: int, output_tokens: int, batch: bool = False) -> float | None:
    """litellm's price for these tokens (its batch price with `batch`), or None when it has no price for the model."""
    if batch:
        return batch_cost(model, input_tokens, output_tokens)[0]
    try:
        prompt, completion = litellm_module().cost_per_token(model=model, prompt_tokens=input_tokens, completion_tokens=output_tokens)
    except Exception:  # noqa: BLE001  (ModelNotMappedError and friends: the model has no known price)
        return None
    return float(prompt) + float(completion)


def is_priced(model: str) -> bool:
    """Whether litellm knows a price for `model`."""
    return price(model, 1, 1) is not None


def _count(model: str, messages: list[OpenAIMessage], tools: list[ToolDefinition] | None = None) -> int:
    count: int = litellm_module().token_counter(model=model, messages=messages, tools=tools or None)
    return count


def _reply_of(text: str) -> Message:
    return {"role": "assistant", "parts": [{"type": "text", "content": text}], "generation": None}


def target_input_tokens(
    model: str, history: list[Message], schema: JSONObject | None = None, tools: list[ToolDefinition] | None = None
) -> int:
    """The target request's input tokens, as the run builds it (with the JSON instructions a `prompt`-mode
    schema adds, the largest form, when `schema` is given; `tools` the conversation's stored definitions)."""
    request = replay_request(history, tools)
    messages = with_instructions("prompt", request["messages"], schema) if schema else request["messages"]
    return _count(model, messages, request.get("tools"))


def evaluator_input_tokens(
    evaluator: EvaluatorConfig, history: list[Message], reply: Message, with_schema: bool = False
) -> int:
    """The evaluator request's input tokens for `reply` (with its reply schema in the prompt when `with_schema`)."""
    request = build_request(evaluator, [*history, reply])
    if with_schema:
        request = with_instructions("prompt", request, reply_schema([x["name"] for x in evaluator.labels], reply["parts"]))
    return _count(evaluator.model, request)


@functools.cache
def output_bound(model: str) -> int:
    """The most output tokens one call of `model` can produce: litellm's `max_output_tokens` for it, else
    `FALLBACK_OUTPUT_BOUND` (the target is sent no `max_tokens`, so the model's own limit is the bound)."""
    try:
        info = litellm_module().get_model_info(model)
    except Exception:  # noqa: BLE001  (a model litellm does not know)
        log.debug("no output limit known for %s: reserving %d output tokens", model, FALLBACK_OUTPUT_BOUND)
        return FALLBACK_OUTPUT_BOUND
    bound = info.get("max_output_tokens") or info.get("max_tokens")
    return int(bound) if isinstance(bound, int | float) and bound > 0 else FALLBACK_OUTPUT_BOUND


def item_bound(
    messages: list[Message], needs_replay: bool, plan: ItemPlan, tools: list[ToolDefinition] | None = None
) -> float:
    """The price the budget reserves for one item before it starts: the most its calls can cost, in USD.

    `messages` is what the run loaded for it: the source conversation when it is replayed (or copied),
    the stored result when it is only evaluated. The target call: its request's input tokens, counted
    with litellm, plus `output_bound(model)` output tokens. The evaluator call: its request for this
    conversation with an empty reply plus that same output bound (the reply it will quote is at most
    that long; the real reply when it is already known), its reply schema in the prompt, and output at
    the evaluator's `max_tokens`, times `EVALUATOR_ATTEMPTS` (an unusable reply is asked for again).
    A model litellm has no price for adds $0 (its calls are not counted, as `--max-cost-unpriced-ok` says).
    """
    history, reply = split_reply(with_system_prompt(messages, plan.system_prompt) if needs_replay else messages)
    total, reply_bound = 0.0, 0
    if needs_replay and not plan.pass_through:
        if not history:
            return 0.0  # nothing to replay: the item fails without a call
        reply_bound = output_bound(plan.model)
        total += price(plan.model, target_input_tokens(plan.model, history, plan.target_schema, tools), reply_bound) or 0.0
        reply = _reply_of("")
    if plan.evaluator is not None and reply is not None:
        tokens_in = evaluator_input_tokens(plan.evaluator, history, reply, with_schema=True) + reply_bound
        tokens_out = plan.evaluator.max_tokens or EVALUATOR_MAX_TOKENS
        total += price(plan.evaluator.model, EVALUATOR_ATTEMPTS * tokens_in, EVALUATOR_ATTEMPTS * tokens_out) or 0.0
    return total


def _reply_tokens(model: str, reply: Message | None) -> int:
    """The recorded reply's length in tokens: its own output_tokens if recorded, else its counted text."""
    if reply is None:
        return DEFAULT_TARGET_OUTPUT_TOKENS
    recorded = generation.get("output_tokens") if (generation := reply.get("generation")) else None
    if isinstance(recorded, int) and recorded > 0:
        return recorded
    text = " ".join(str(p.get("content") or json.dumps(p.get("arguments"), ensure_ascii=False)) for p in reply["parts"])
    count: int = litellm_module().token_counter(model=model, text=text or " ")
    return max(count, 1)


def estimate(
    conversations: list[list[Message]],
    *,
    model: str,
    pass_through: bool,
    system_prompt: str | None,
    evaluator: EvaluatorConfig | None,
    tools: list[list[ToolDefinition] | None] | None = None,
    probe: CacheProbe | None = None,
    batch: bool = False,
) -> Estimate:
    """The estimate for running these conversations (each a list of native messages; `tools[i]` the stored
    tool definitions of conversation i, declared in its request as a run declares them); with a `probe`,
    the requests the response cache would answer are counted as cached calls (no tokens, $0)."""
    target = None if pass_through else ModelEstimate(model, "target")
    judge = ModelEstimate(evaluator.model, "evaluator") if evaluator else None
    for index, messages in enumerate(conversations):
        history, reply = split_reply(with_system_prompt(messages, system_prompt))
        known: Message | None = reply if pass_through else None  # the reply the evaluator would judge, when it can be known now
        if target is not None and history:
            target.calls += 1
            own_tools = tools[index] if tools else None
            cached = probe.target_reply(history, own_tools) if probe is not None else None
            if cached is not None:
                target.cached_calls += 1
                known = {"role": "assistant", "parts": cached}
            else:
                target.input_tokens += target_input_tokens(model, history, tools=own_tools)
                target.output_tokens += _reply_tokens(model, reply)
        if judge is not None and evaluator is not None and (reply is not None or not pass_through):
            judge.calls += 1
            if known is not None and probe is not None and probe.evaluation_cached([*history, known]):
                judge.cached_calls += 1
                continue
            final = known or reply or _reply_of("x " * DEFAULT_TARGET_OUTPUT_TOKENS)
            judge.input_tokens += evaluator_input_tokens(evaluator, history, final)
            judge.output_tokens += DEFAULT_EVALUATOR_OUTPUT_TOKENS
    result = Estimate(items=len(conversations), target=target, evaluator=judge, batch=batch)
    for part in (target, judge):
        if part is None or part.calls == 0:
            continue
        part.cost_usd = price(part.model, part.input_tokens, part.output_tokens, batch) if part.calls > part.cached_calls else 0.0
        if part.model in result.per_model:  # the same model as target and evaluator: one row
            merged = result.per_model[part.model]
            merged.role, merged.calls = "target+evaluator", merged.calls + part.calls
            merged.cached_calls += part.cached_calls
            merged.input_tokens += part.input_tokens
            merged.output_tokens += part.output_tokens
            merged.cost_usd = None if merged.cost_usd is None or part.cost_usd is None else merged.cost_usd + part.cost_usd
        else:
            result.per_model[part.model] = ModelEstimate(
                part.model, part.role, part.calls, part.input_tokens, part.output_tokens, part.cost_usd, part.cached_calls
            )
    return result


def check_priced(models: list[str], max_cost: float | None, unpriced_ok: bool) -> None:
    """`--max-cost` needs prices: refuse it (`BadInputError`) for a model litellm has no price for."""
    if max_cost is None:
        return
    if max_cost <= 0:
        raise BadInputError([Field("max_cost_usd"), " must be more than 0 (USD)"], field="max_cost_usd")
    unpriced = [m for m in dict.fromkeys(models) if not is_priced(m)]
    if unpriced and not unpriced_ok:
        raise BadInputError(
            [Field("max_cost_usd"), f" cannot be kept: litellm has no price for {', '.join(unpriced)}, so its calls would count as $0; "
             "add ", Field("max_cost_unpriced_ok"), " to cap only the priced calls"],
            field="max_cost_usd",
        )


def called_models(experiment: Any) -> list[str]:
    """The models a run of this experiment (or spec) calls: the target unless pass-through, and the evaluator."""
    models = [] if experiment.pass_through else [experiment.model]
    return models + ([experiment.evaluator_model] if experiment.evaluator_model else [])


def dry_run(store: Store, spec: ExperimentSpec, *, check_models: bool = True, use_cache: bool = True, batch: bool = False) -> Estimate:
    """Everything `run` checks (preflight included, unless `check_models=False`), then the estimate (requests
    the response cache would answer at $0 unless `use_cache=False`); stores nothing, calls nothing."""
    check_spec(spec)
    ids = list(dict.fromkeys(spec.conversation_ids))
    with store.read() as session:
        check_known(session, ids)
        conversations = {i: require_conversation(session.connection(), i) for i in ids}
    return dry_run_conversations(spec, conversations, check_models=check_models, cache_store=store if use_cache else None, batch=batch)


def dry_run_conversations(
    spec: ExperimentSpec, conversations: dict[str, Conversation], *, check_models: bool = True,
    cache_store: Store | None = None, batch: bool = False,
) -> Estimate:
    """The dry run over conversations held in memory (id -> `{"messages", "tools"}`; `run --input F --dry-run`
    reads the file without storing it): the spec's checks and the preflight, then the estimate (the requests
    `cache_store`'s response cache would answer at $0; `batch`: at batch prices). Nothing is stored."""
    check_spec(spec)
    if check_models:
        preflight(spec)
    evaluator = EvaluatorConfig.from_experiment(spec_view(spec)) if spec.evaluator_model else None
    probe = CacheProbe(cache_store, spec, evaluator) if cache_store is not None else None
    chosen = [conversations[i] for i in dict.fromkeys(spec.conversation_ids)]
    messages = [c["messages"] for c in chosen]
    result = estimate(messages, model=spec.model, pass_through=spec.pass_through, system_prompt=spec.system_prompt_override,
                      evaluator=evaluator, tools=[c.get("tools") for c in chosen], probe=probe, batch=batch)
    return with_rules(result, spec.rules, sum(1 for m in messages if not spec.pass_through or split_reply(m)[1] is not None))


def with_rules(result: Estimate, rules: Sized | None, replies: int) -> Estimate:
    """The estimate with the rule evaluators it runs: free, no model call."""
    if rules:
        result.rules, result.rule_evaluations = len(rules), replies
    return result


def dry_run_reevaluation(
    store: Store, source_id: str, spec: ExperimentSpec, *, use_cache: bool = True, batch: bool = False
) -> Estimate:
    """What `reevaluate` would cost: one evaluator call per completed item of `source_id`, no target call
    (and its rules, the source's unless it has its own, for free; cached evaluator calls at $0)."""
    with store.read() as session:
        rules = reevaluation_rules(require_experiment(session, source_id), spec)
        results = completed_results(session, source_id)
        if not results:
            raise BadInputError(f"experiment {source_id} has no completed items to evaluate again")
        conversations = [require_conversation(session.connection(), i)["messages"] for _, i in results]
    evaluator = None
    if spec.evaluator_model:
        check_model(spec.evaluator_model, spec.evaluator_api_base, "evaluator_model")
        evaluator = EvaluatorConfig.from_experiment(spec_view(spec))
    probe = CacheProbe(store, spec, evaluator) if use_cache else None
    result = estimate(conversations, model=spec.model, pass_through=True, system_prompt=None, evaluator=evaluator, probe=probe, batch=batch)
    return with_rules(result, rules, len(conversations))
