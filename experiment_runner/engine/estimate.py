"""What a run would cost, before it runs (`run --dry-run`), and whether a model has a known price.

Every request the run would send is built with the real code (replay for the target, the evaluator's
template for the evaluator) and its input tokens counted with litellm's token counter for that model.
Output tokens are estimated: for the target, the recorded final reply's length where the conversation
has one (its recorded `output_tokens`, else the counted text), else `DEFAULT_TARGET_OUTPUT_TOKENS`;
for the evaluator, `DEFAULT_EVALUATOR_OUTPUT_TOKENS`. The reply schema sent as `response_format` is not
counted (some servers add it to the prompt, others turn it into a grammar). Prices come from litellm's price list; a model
it has no price for is reported as unpriced (its cost unknown, never $0). Requests the response cache would
answer (`cache_probe`) are counted as `cached_calls`, with no tokens and $0. Nothing is stored or called.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from experiment_runner.engine.batch import batch_cost
from experiment_runner.engine.cache_probe import CacheProbe
from experiment_runner.engine.experiments import ExperimentSpec, check_known, check_spec, completed_results, preflight, spec_view
from experiment_runner.engine.llm import check_model, litellm_module
from experiment_runner.engine.replay import replay_request, split_reply, with_system_prompt
from experiment_runner.errors import BadInputError
from experiment_runner.evaluation.evaluator import EvaluatorConfig, build_request
from experiment_runner.ingest.conversations import load_conversation
from experiment_runner.store import Store

DEFAULT_TARGET_OUTPUT_TOKENS = 500
DEFAULT_EVALUATOR_OUTPUT_TOKENS = 400


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

    def as_dict(self) -> dict[str, Any]:
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

    def as_dict(self) -> dict[str, Any]:
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


def _count(model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
    count: int = litellm_module().token_counter(model=model, messages=messages, tools=tools or None)
    return count


def _reply_tokens(model: str, reply: dict[str, Any] | None) -> int:
    """The recorded reply's length in tokens: its own output_tokens if recorded, else its counted text."""
    if reply is None:
        return DEFAULT_TARGET_OUTPUT_TOKENS
    recorded = (reply.get("generation") or {}).get("output_tokens")
    if isinstance(recorded, int) and recorded > 0:
        return recorded
    text = " ".join(p.get("content") or json.dumps(p.get("arguments"), ensure_ascii=False) for p in reply["parts"])
    count: int = litellm_module().token_counter(model=model, text=text or " ")
    return max(count, 1)


def estimate(
    conversations: list[list[dict[str, Any]]],
    *,
    model: str,
    pass_through: bool,
    system_prompt: str | None,
    evaluator: EvaluatorConfig | None,
    probe: CacheProbe | None = None,
    batch: bool = False,
) -> Estimate:
    """The estimate for running these conversations (each a list of native messages); with a `probe`, the
    requests the response cache would answer are counted as cached calls (no tokens, $0)."""
    target = None if pass_through else ModelEstimate(model, "target")
    judge = ModelEstimate(evaluator.model, "evaluator") if evaluator else None
    for messages in conversations:
        history, reply = split_reply(with_system_prompt(messages, system_prompt))
        known = reply if pass_through else None  # the reply the evaluator would judge, when it can be known now
        if target is not None and history:
            target.calls += 1
            cached = probe.target_reply(history) if probe is not None else None
            if cached is not None:
                target.cached_calls += 1
                known = {"role": "assistant", "parts": cached}
            else:
                request = replay_request(history)
                target.input_tokens += _count(model, request["messages"], request.get("tools"))
                target.output_tokens += _reply_tokens(model, reply)
        if judge is not None and evaluator is not None and (reply is not None or not pass_through):
            judge.calls += 1
            if known is not None and probe is not None and probe.evaluation_cached([*history, known]):
                judge.cached_calls += 1
                continue
            final = known or reply or {"role": "assistant", "parts": [{"type": "text", "content": "x " * DEFAULT_TARGET_OUTPUT_TOKENS}]}
            judge.input_tokens += _count(evaluator.model, build_request(evaluator, [*history, final]))
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
        raise BadInputError("--max-cost must be more than 0 (USD)", loc=("body", "max_cost_usd"))
    unpriced = [m for m in dict.fromkeys(models) if not is_priced(m)]
    if unpriced and not unpriced_ok:
        raise BadInputError(
            f"--max-cost cannot be kept: litellm has no price for {', '.join(unpriced)}, so its calls would count as $0; "
            "add --max-cost-unpriced-ok to cap only the priced calls",
            loc=("body", "max_cost_usd"),
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
        conversations = [load_conversation(session, i)["messages"] for i in ids]
    if check_models:
        preflight(spec)
    evaluator = EvaluatorConfig.from_experiment(spec_view(spec)) if spec.evaluator_model else None
    probe = CacheProbe(store, spec, evaluator) if use_cache else None
    return estimate(conversations, model=spec.model, pass_through=spec.pass_through,
                    system_prompt=spec.system_prompt_override, evaluator=evaluator, probe=probe, batch=batch)


def dry_run_reevaluation(
    store: Store, source_id: str, spec: ExperimentSpec, *, use_cache: bool = True, batch: bool = False
) -> Estimate:
    """What `reevaluate` would cost: one evaluator call per completed item of `source_id`, no target call."""
    if not spec.evaluator_model:
        raise BadInputError("a re-evaluation needs an evaluator model", loc=("body", "evaluator_model"))
    with store.read() as session:
        results = completed_results(session, source_id)
        if not results:
            raise BadInputError(f"experiment {source_id} has no completed items to evaluate again")
        conversations = [load_conversation(session, i)["messages"] for _, i in results]
    check_model(spec.evaluator_model, spec.evaluator_api_base, "--evaluator-model")
    evaluator = EvaluatorConfig.from_experiment(spec_view(spec))
    probe = CacheProbe(store, spec, evaluator) if use_cache else None
    return estimate(conversations, model=spec.model, pass_through=True, system_prompt=None, evaluator=evaluator, probe=probe, batch=batch)
