"""Which of a dry run's requests the response cache would answer (and so cost $0).

The requests are built with the run's own builders (`replay.target_call`, `evaluate.evaluator_call`), so a
key here is the key the run would look up. With structured output in `auto`, the run may send any of the
fallback modes; a reply cached under any of them counts as a hit. An evaluator request can only be
known when the reply it judges is: a pass-through reply, or a target reply the cache itself holds.
"""

import json
from typing import Any

from experiment_runner.conversation import JSONObject, Message, OpenAIMessage, Part, ToolDefinition
from experiment_runner.engine.cache import cache_key
from experiment_runner.engine.evaluate import evaluator_call
from experiment_runner.engine.experiments import reasoning_kwargs
from experiment_runner.engine.output_schema import to_json_schema
from experiment_runner.engine.replay import replay_request, target_call
from experiment_runner.engine.structured import FALLBACK
from experiment_runner.evaluation.evaluator import EvaluatorConfig
from experiment_runner.store import Store
from experiment_runner.store.queries import cache as q


def modes(setting: str | None) -> tuple[str, ...]:
    """The structured-output modes a run with this setting may send."""
    return FALLBACK if (setting or "auto") == "auto" else (setting or "auto",)


class CacheProbe:
    """Looks up the cache for the requests a run of one experiment spec would send."""

    def __init__(self, store: Store, spec: Any, evaluator: EvaluatorConfig | None):
        self.store = store
        self.spec = spec
        self.evaluator = evaluator
        self.schema = to_json_schema(spec.output_schema) if getattr(spec, "output_schema", None) else None

    def _cached(self, model: str, api_base: str | None, calls: list[tuple[list[OpenAIMessage], JSONObject]]) -> list[Part] | None:
        """The reply parts cached for the first of `calls` the cache holds, or None."""
        with self.store.read() as session:
            conn = session.connection()
            for messages, kwargs in calls:
                row = q.get_entry(conn, cache_key(model, api_base, messages, kwargs))
                if row is not None:
                    parts: list[Part] = json.loads(row.parts)
                    return parts
        return None

    def target_reply(self, history: list[Message], tools: list[ToolDefinition] | None = None) -> list[Part] | None:
        """The cached reply parts the target call for `history` (with the conversation's stored `tools`) would get, or None."""
        request, settings = replay_request(history, tools), reasoning_kwargs(self.spec.reasoning_config)
        candidates = modes(self.spec.response_format) if self.schema else ("prompt",)
        calls = [target_call(request, mode, self.schema, settings) for mode in candidates]
        return self._cached(self.spec.model, self.spec.api_base, calls)

    def evaluation_cached(self, messages: list[Message]) -> bool:
        """Whether the evaluator call for the final reply of `messages` would be answered by the cache."""
        if self.evaluator is None:
            return False
        calls = [evaluator_call(self.evaluator, messages, mode) for mode in modes(self.evaluator.response_format)]
        return self._cached(self.evaluator.model, self.evaluator.api_base, calls) is not None
