"""The evaluator: one model call per reply, asking for labelled verbatim quotes, turned into exact spans.

The request (template `prompts/evaluator.md`) defines the labels, shows the conversation the reply
answered (system prompt, user turns, tool calls and results) and the reply part by part with its part
indexes, and asks for `evaluator-response.schema.json` restricted to the configured labels and the reply's
parts (`reply_schema`), in the structured-output mode the server accepts (`engine/structured.py`).
A reply that is not that JSON is repaired where it safely can be (code fences, text around the object,
label case) or asked for once more; still unusable, the evaluation is `failed` with a clear message and
the item stays completed. Labels outside the configured set and quotes not found in the reply are
dropped; the evaluation records how many, by reason (`dropped`), and its `error_message` says so.
"""

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from experiment_runner import jsonlimits
from experiment_runner.conversation import EvaluationStatus, JSONObject, Message, OpenAIMessage, Part
from experiment_runner.errors import BadInputError
from experiment_runner.evaluation.spans import Quote, Span, part_target
from experiment_runner.files import read_json_file

DEFAULT_LABELS: tuple[dict[str, str], ...] = (
    {
        "name": "Fabrication",
        "description": "The reply states a fact, number, name, date, quote, source or detail that the evidence "
        "(system prompt, user messages, tool results) does not contain and does not imply: it is invented or "
        "unsupported, even if it might be true elsewhere. Includes made-up tool arguments the user never gave.",
    },
    {
        "name": "Context Misattribution",
        "description": "The reply uses information that is in the evidence but gets it wrong: it contradicts the "
        "source, changes a value, swaps who did what, misreads a date or quantity, or credits a statement to "
        "the wrong source, document, speaker or tool result.",
    },
    {
        "name": "Reasoning Error",
        "description": "The reply starts from correct evidence but draws a conclusion that does not follow: an "
        "arithmetic or unit mistake, a wrong comparison, an invalid inference, or a step that contradicts an "
        "earlier step of the reply itself.",
    },
    {
        "name": "Incorrect Refusal",
        "description": "The reply declines, deflects or says it cannot help (or that the information is "
        "unavailable) although the request is allowed by the system prompt and answerable from the evidence. "
        "Quote the refusing sentence.",
    },
)

RESPONSE_SCHEMA_FILE = "evaluator-response.schema.json"



@dataclass(frozen=True)
class EvaluatorConfig:
    """Which model evaluates, where, and with which labels."""

    model: str
    api_base: str | None = None
    labels: tuple[dict[str, str], ...] = DEFAULT_LABELS
    domain_context: str | None = None
    max_tokens: int | None = None  # None: the engine's default
    response_format: str = "auto"  # auto | json_schema | json_object | prompt

    @classmethod
    def from_experiment(cls, experiment: Any) -> "EvaluatorConfig | None":
        """The experiment's evaluator settings, or None when it has no evaluator."""
        if not experiment.evaluator_model:
            return None
        labels = experiment.labels or {}
        settings = (getattr(experiment, "structured_output", None) or {}).get("evaluator") or {}
        return cls(
            model=experiment.evaluator_model,
            api_base=experiment.evaluator_api_base,
            labels=tuple(labels.get("labels") or DEFAULT_LABELS),
            domain_context=labels.get("domain_context"),
            max_tokens=settings.get("max_tokens"),
            response_format=settings.get("setting") or "auto",
        )


@dataclass(frozen=True)
class EvaluationOutcome:
    """What one evaluation produced, ready to store."""

    status: EvaluationStatus
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    detection_duration_ms: float | None = None
    total_duration_ms: float | None = None
    error_message: str | None = None
    spans: list[Span] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # why annotations were dropped: {reason kind: count}
    cost_usd: float | None = None
    response_format: str | None = None  # the structured-output mode the call used
    cached_calls: int = 0  # calls the response cache answered (no model call made)
    cost_saved_usd: float | None = None  # what those calls cost when they were first made


def load_labels(path: str | Path) -> dict[str, Any]:  # the spec's `labels`
    """Read a `--labels` file: `{"labels": [{"name", "description"}], "domain_context"?: str}`."""
    return check_labels(read_json_file(path, "labels"), str(path))


def check_labels(data: Any, where: str = "labels") -> dict[str, Any]:
    """Validate a labels document; return it normalised."""
    labels = data.get("labels") if isinstance(data, dict) else None
    if not isinstance(labels, list) or not labels:
        raise BadInputError(f'{where}: expected {{"labels": [{{"name", "description"}}, ...]}} with at least one label')
    names = set()
    for i, label in enumerate(labels):
        if not (isinstance(label, dict) and isinstance(label.get("name"), str) and label["name"].strip()
                and isinstance(label.get("description"), str) and label["description"].strip()):
            raise BadInputError(f"{where}: label {i} needs a non-empty 'name' and 'description'")
        if label["name"].casefold() in names:
            raise BadInputError(f"{where}: label {label['name']!r} appears twice")
        names.add(label["name"].casefold())
    context = data.get("domain_context")
    if context is not None and not isinstance(context, str):
        raise BadInputError(f"{where}: 'domain_context' must be a string")
    result: dict[str, Any] = {"labels": [{"name": x["name"].strip(), "description": x["description"].strip()} for x in labels]}
    if context:
        result["domain_context"] = context
    return result


RESPONSE_NAME = "evaluator_response"


def reply_schema(label_names: list[str], parts: list[Part]) -> JSONObject:
    """The reply schema for one evaluation, saying exactly what we accept: `label` one of the configured
    names, `message_part_index` one of the reply's text, reasoning or tool-call parts. A server that
    constrains its output to the schema then cannot produce an annotation we would drop for those."""
    schema = strict_schema(response_schema())
    item = schema["properties"]["annotations"]["items"]
    indexes = [i for i, p in enumerate(parts) if p.get("type") in ("text", "reasoning", "tool_call")] or [0]
    item["properties"] = {
        **item["properties"],
        "label": {**item["properties"]["label"], "enum": list(label_names)},
        "message_part_index": {"type": "integer", "enum": indexes, "description": item["properties"]["message_part_index"]["description"]},
    }
    return schema


@functools.cache
def _package_text(name: str) -> str:
    """A text file shipped in this package, read once per process (it is read for every evaluation)."""
    return resources.files("experiment_runner.evaluation").joinpath(name).read_text(encoding="utf-8")


def response_schema() -> JSONObject:
    """The evaluator reply schema shipped with the package (a fresh copy: callers may change it)."""
    loaded: JSONObject = json.loads(_package_text(RESPONSE_SCHEMA_FILE))
    return loaded


def build_request(config: EvaluatorConfig, messages: list[Message]) -> list[OpenAIMessage]:
    """The evaluator's chat messages for the final message of `messages`."""
    template = _package_text("prompts/evaluator.md")
    template = template.split("-->", 1)[1] if template.startswith("<!--") else template
    system, user = template.split("=== user message ===")
    labels = "\n".join(f"- **{x['name']}**: {x['description']}" for x in config.labels)
    domain = f"\n## Domain\n\n{config.domain_context}\n" if config.domain_context else ""
    values = {"labels": labels, "domain_context": domain, "context": render_context(messages[:-1]), "reply": render_reply(messages[-1]["parts"])}
    return [
        {"role": "system", "content": Template(system.strip()).safe_substitute(values)},
        {"role": "user", "content": Template(user.strip()).safe_substitute(values)},
    ]


def render_context(history: list[Message]) -> str:
    """The conversation before the reply, as readable text (reasoning parts left out)."""
    blocks = []
    for message in history:
        for part in message["parts"]:
            if part["type"] == "text":
                blocks.append(f"[{message['role']}]\n{part['content']}")
            elif part["type"] == "tool_call":
                blocks.append(f"[{message['role']} calls tool {part['name']}]\n{json.dumps(part['arguments'], ensure_ascii=False)}")
            elif part["type"] == "tool_call_response":
                body = part["response"] if isinstance(part["response"], str) else json.dumps(part["response"], ensure_ascii=False)
                blocks.append(f"[tool result{' for ' + call_id if (call_id := part.get('id')) else ''}]\n{body}")
    return "\n\n".join(blocks) or "(no earlier messages)"


def render_reply(parts: list[Part]) -> str:
    """The reply's parts with their indexes; tool-call arguments one per line, as the offsets index them."""
    blocks = []
    for index, part in enumerate(parts):
        if part["type"] == "tool_call":
            lines = [f"[part {index}] tool call `{part['name']}` with arguments:"]
            lines += [f"  - {name}: {part_target(part, name)}" for name in part["arguments"]]
            blocks.append("\n".join(lines))
        elif part["type"] in ("text", "reasoning"):
            kind = "text" if part["type"] == "text" else "reasoning (the model's own notes)"
            blocks.append(f"[part {index}] {kind}:\n{part['content']}")
    return "\n\n".join(blocks)


def parse_reply(text: str, label_names: list[str]) -> tuple[list[Quote], int]:
    """Quotes from an evaluator reply (repairing fences and surrounding text) and how many had unknown labels.

    Raises ValueError when the reply is not usable."""
    data = _decode_object(text)
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise ValueError("reply has no 'annotations' list")
    canonical = {name.casefold(): name for name in label_names}
    quotes, unknown = [], 0
    for i, raw in enumerate(annotations):
        if not isinstance(raw, dict) or not isinstance(raw.get("text"), str) or not isinstance(raw.get("label"), str):
            raise ValueError(f"annotation {i} needs string 'label' and 'text'")
        label = canonical.get(raw["label"].strip().casefold())
        if label is None:
            unknown += 1
            continue
        index = raw.get("message_part_index", -1)
        quotes.append(
            Quote(
                label=label,
                text=raw["text"],
                explanation=raw.get("explanation") if isinstance(raw.get("explanation"), str) else None,
                message_part_index=index if isinstance(index, int) and not isinstance(index, bool) else -1,  # -1: search every part
                tool_name=raw.get("tool_name") if isinstance(raw.get("tool_name"), str) else None,
                parameter_name=raw.get("parameter_name") if isinstance(raw.get("parameter_name"), str) else None,
            )
        )
    return quotes, unknown


def _decode_object(text: str) -> Any:
    """The JSON object in `text`: as-is, inside a ``` fence, or the first object amid other text.

    Within the JSON limits (`jsonlimits`): a reply past one is unusable (`JSONLimitError`, a ValueError)."""
    try:
        return jsonlimits.loads(text)
    except json.JSONDecodeError:
        pass
    start = text.find("{")
    if start < 0:
        raise ValueError("reply is not JSON")
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise ValueError(f"reply is not valid JSON ({exc.msg} at char {exc.pos})") from None
    return value


def strict_schema(schema: JSONObject) -> JSONObject:
    """The schema without the annotation keywords providers reject in strict mode at the top level."""
    return {k: v for k, v in schema.items() if k not in ("$schema", "title", "description")}
