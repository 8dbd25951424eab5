"""What a batch job asks for each item, and what an answer (or its absence) makes of the item.

Requests are built with the live run's builders (`replay.target_call`, `evaluate.evaluator_call`), so a
batch answer and a live reply share one cache key. A batch cannot probe structured-output modes: it
sends the mode the experiment learned before, the pinned one, or `json_schema` (the first of `auto`).
"""

from dataclasses import dataclass

from experiment_runner.conversation import Generation, JSONObject, Message, Part, ToolDefinition
from experiment_runner.engine import writer as w
from experiment_runner.engine.cache import ResponseCache
from experiment_runner.engine.evaluate import evaluator_call, outcome_of_reply, rules_evaluation, with_rule_spans
from experiment_runner.engine.experiments import reasoning_kwargs
from experiment_runner.engine.llm import Completion
from experiment_runner.engine.output_schema import check_reply, to_json_schema
from experiment_runner.engine.replay import replay_request, result_messages, split_reply, target_call, with_system_prompt
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.engine.structured import FALLBACK
from experiment_runner.evaluation.rules import rules_of
from experiment_runner.store.queries.common import encode_json
from experiment_runner.store.queries.rows import BatchRequestRow
from experiment_runner.store.tables import Experiment


@dataclass(frozen=True)
class Prepared:
    """One request to put in a job: whose item it is, its structured-output mode, cache key and body."""

    custom_id: str
    item_id: str
    mode: str
    cache_key: str
    body: JSONObject  # messages and arguments, without the model

    def row(self) -> BatchRequestRow:
        """The `batch_request` row (the job id is added when it is stored)."""
        return {"custom_id": self.custom_id, "item_id": self.item_id, "mode": self.mode, "cache_key": self.cache_key,
                "body": encode_json(self.body)}


class RequestBuilder:
    """Builds an experiment's batch requests and turns answers into the writer's events."""

    def __init__(self, experiment: Experiment, cache: ResponseCache):
        self.experiment = experiment
        self.cache = cache
        self.evaluator = ExperimentSpec.from_row(experiment).evaluator()
        self.rules = rules_of(experiment.labels)  # rule evaluators: applied as answers arrive, no request of their own
        self.evaluates = self.evaluator is not None or bool(self.rules)
        self.schema = to_json_schema(experiment.output_schema) if experiment.output_schema else None
        self.settings = reasoning_kwargs(experiment.reasoning_config)

    def endpoint(self, role: str) -> tuple[str, str | None]:
        """(model, api_base) of a role (the evaluator's only exists, and is only asked for, with an evaluator model)."""
        if role == "target":
            return self.experiment.model, self.experiment.api_base
        assert self.experiment.evaluator_model is not None, "an evaluator request without an evaluator model"
        return self.experiment.evaluator_model, self.experiment.evaluator_api_base

    def mode(self, role: str) -> str:
        """The structured-output mode a batch sends for `role`: learned, else pinned, else `json_schema`."""
        if role == "target" and self.schema is None:
            return "prompt"
        settings = (self.experiment.structured_output or {}).get(role) or {}
        setting = settings.get("setting") or "auto"
        return str(settings.get("used") or (setting if setting != "auto" else FALLBACK[0]))

    async def prepare(
        self, role: str, item_id: str, messages: list[Message], tools: list[ToolDefinition] | None = None
    ) -> Prepared | w.Event:
        """The request for an item (`tools`: its conversation's stored tool definitions), or its event right away
        (a cache hit, a pass-through copy, rules alone, nothing to ask)."""
        mode = self.mode(role)
        if role == "target":
            history, original = split_reply(with_system_prompt(messages, self.experiment.system_prompt_override))
            if self.experiment.pass_through:
                if original is None:
                    return w.Failed(item_id, "pass-through: the conversation has no final assistant reply to copy")
                return self._replayed(item_id, history, original["parts"], original.get("generation"), None)
            if not history:
                return w.Failed(item_id, "the conversation has no messages before its final reply to replay")
            call_messages, kwargs = target_call(replay_request(history, tools), mode, self.schema, self.settings)
        else:
            if self.evaluator is None or not messages or messages[-1]["role"] != "assistant":
                return self.result(role, item_id, messages, None, mode, "the conversation does not end with an assistant reply to evaluate")
            call_messages, kwargs = evaluator_call(self.evaluator, messages, mode)
        model, api_base = self.endpoint(role)
        key = self.cache.key(model, api_base, call_messages, kwargs)
        hit = await self.cache.lookup(key, model)
        if hit is not None:
            return self.result(role, item_id, messages, hit, mode, None)
        return Prepared(f"{role}-{item_id}", item_id, mode, key, {"messages": call_messages, **kwargs})

    def result(self, role: str, item_id: str, messages: list[Message], reply: Completion | None, mode: str,
               error: str | None) -> w.Event:
        """The writer's event for an answer (`reply`) or a failed request (`error`)."""
        if role == "evaluator":
            if self.evaluator is None:
                outcome = rules_evaluation(self.rules, messages)
            else:
                outcome = with_rule_spans(outcome_of_reply(self.evaluator, messages, reply, mode, error), self.rules, messages)
            if reply is not None and outcome.status == "failed":
                self.cache.forget(reply)
            return w.Evaluated(item_id, messages[-1]["id"], outcome) if messages else w.Failed(item_id, error or "no reply")
        if reply is None:
            return w.Failed(item_id, error or "no reply")
        history, _ = split_reply(with_system_prompt(messages, self.experiment.system_prompt_override))
        problem = check_reply(self.experiment.output_schema, reply.text) if self.experiment.output_schema else None
        if problem is not None:
            self.cache.forget(reply)
        return self._replayed(item_id, history, reply.parts, reply.generation, problem)

    def _replayed(self, item_id: str, history: list[Message], parts: list[Part], generation: Generation | None,
                  problem: str | None) -> w.Event:
        finished = problem is not None or not self.evaluates
        return w.Replayed(item_id, result_messages(history, parts, generation), problem, finished)
