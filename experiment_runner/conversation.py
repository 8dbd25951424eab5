"""The conversation shape every stage shares: messages, their parts, generation metadata, and the words for them.

Native messages (the export's shape) carry OpenTelemetry GenAI parts `text`, `reasoning`, `tool_call` and
`tool_call_response`; `to_openai_messages` turns them into the OpenAI chat messages litellm takes, and
`content_hash` fingerprints what a conversation says. The vocabularies (roles, item and evaluation statuses,
finish reasons, drop reasons) are `Literal` types, each with its words where the product has words for it.
Neutral: it imports only the standard library and `jsonlimits`, so every stage may import it; validating a
file's conversations stays in `ingest/formats.py`.
"""

import hashlib
import json
from typing import (
    Any,
    Literal,
    NamedTuple,
    NotRequired,  # pydantic (sqlmodel's tables, request bodies) needs these on Python < 3.12
    cast,
    get_args,
)

from typing_extensions import TypedDict

from experiment_runner import jsonlimits

__all__ = [
    "DROP_REASONS", "EVALUATION_STATUSES", "FINISH_REASONS", "ITEM_STATUSES", "ROLES", "SYSTEM_ROLES",
    "Conversation", "DropReason", "DropWords", "EvaluationStatus", "FinishReason", "Generation", "ItemStatus",
    "Annotation", "JSONObject", "JSONValue", "Message", "OpenAIMessage", "OpenAIToolCall", "Part", "ReasoningPart", "Role",
    "TextPart", "ToolCallPart", "ToolCallResponsePart", "ToolDefinition", "ToolFunction",
    "content_hash", "drop_words", "finish_reason", "text_of", "to_openai_messages",
]

JSONValue = Any
"""Any JSON value whose shape is open (a tool's result, a provider's raw answer): checked by `jsonlimits`, read with care."""
JSONObject = dict[str, JSONValue]
"""A JSON object whose members are open (a tool call's arguments, a JSON Schema, a conversation's metadata)."""

Role = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = get_args(Role)
SYSTEM_ROLES: tuple[Role, ...] = ("system", "developer")  # instructions to the model; `--system-prompt` replaces the first one

ItemStatus = Literal["pending", "in_progress", "completed", "failed"]
ITEM_STATUSES: tuple[ItemStatus, ...] = get_args(ItemStatus)
"""The statuses an experiment item can have, in lifecycle order."""

EvaluationStatus = Literal["completed", "failed"]
EVALUATION_STATUSES: tuple[EvaluationStatus, ...] = get_args(EvaluationStatus)

FinishReason = Literal["stop", "length", "tool_call", "content_filter", "error"]
# Providers' finish reasons -> ours (anything else is "error").
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "eos": "stop",
    "length": "length", "max_tokens": "length",
    "tool_calls": "tool_call", "function_call": "tool_call", "tool_use": "tool_call",
    "content_filter": "content_filter", "safety": "content_filter", "recitation": "content_filter",
}


def finish_reason(raw: str) -> FinishReason:
    """A provider's finish reason in our vocabulary (unknown ones are "error")."""
    return FINISH_REASONS.get(raw, "error")


DropReason = Literal["unknown_label", "quote_not_found", "part_index_out_of_range", "empty_quote", "no_such_parameter", "duplicate"]


class DropWords(NamedTuple):
    """How a drop reason is worded: in an evaluation's note ("2 annotation(s) dropped: 1 ...") and as a name (`show`)."""

    note: str
    name: str


DROP_REASONS: dict[DropReason, DropWords] = {
    "unknown_label": DropWords("with labels outside the configured set", "label outside the configured set"),
    "quote_not_found": DropWords("whose quote is not in the reply", "quote not found in the reply"),
    "part_index_out_of_range": DropWords("with a part index out of range whose quote is in no part", "part index out of range"),
    "empty_quote": DropWords("with an empty quote", "empty quote"),
    "no_such_parameter": DropWords("naming a tool parameter the call does not have", "no such tool parameter"),
    "duplicate": DropWords("repeating an earlier annotation", "duplicate"),
}


def drop_words(kind: str) -> DropWords:
    """A drop reason's words (a kind this release does not know, from a newer store, is its own words)."""
    return DROP_REASONS.get(cast(DropReason, kind)) or DropWords(kind, kind)


class TextPart(TypedDict):
    type: Literal["text"]
    content: str


class ReasoningPart(TypedDict):
    type: Literal["reasoning"]
    content: str


class ToolCallPart(TypedDict):
    type: Literal["tool_call"]
    id: NotRequired[str | None]
    name: str
    arguments: JSONObject


class ToolCallResponsePart(TypedDict):
    type: Literal["tool_call_response"]
    id: NotRequired[str | None]
    response: JSONValue  # a string, or any JSON the tool returned


Part = TextPart | ReasoningPart | ToolCallPart | ToolCallResponsePart
"""A message part. An OTLP trace may carry other GenAI part types; they are stored as they came, and every
reader skips a type it does not know."""


class Generation(TypedDict):
    """What produced an assistant message: model, provider, tokens, cost, latency, why it stopped (any may be null)."""

    model: str
    provider: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    latency_ms: float | None
    finish_reasons: list[str] | None
    cache_hit: NotRequired[bool]  # answered by the response cache (`engine.cache`): its cost is 0 now...
    cost_saved_usd: NotRequired[float | None]  # ...and this is what the call cost when it was made
    batch_id: NotRequired[str]  # answered in a provider batch job (`engine.batch_run`), at the batch price...
    cost_unbatched_usd: NotRequired[float | None]  # ...and this is what it would have cost live


class Message(TypedDict):
    """A native message; `id` and `sequence_number` once it is stored (or about to be)."""

    role: Role
    parts: list[Part]
    generation: NotRequired[Generation | None]
    id: NotRequired[str]
    sequence_number: NotRequired[int]


class ToolFunction(TypedDict):
    name: str
    description: NotRequired[str]
    parameters: NotRequired[JSONObject]  # a JSON Schema


class ToolDefinition(TypedDict):
    """An OpenAI tool definition, as a conversation's `tools` and the target's request carry it."""

    type: Literal["function"]
    function: ToolFunction


class Conversation(TypedDict):
    """A conversation: its messages, and the tools and metadata it was imported with (if any)."""

    id: str | None
    messages: list[Message]
    tools: NotRequired[list[ToolDefinition] | None]
    metadata: NotRequired[JSONObject | None]
    type: NotRequired[str]  # source | result, when read from the store


class Annotation(TypedDict):
    """A problem span of an evaluated message, as the export shows it (offsets index `parts[message_part_index]`)."""

    id: str
    label: str
    text: str
    explanation: str | None
    message_part_index: int
    start_offset: int
    end_offset: int
    tool_name: str | None
    parameter_name: str | None


class OpenAIFunctionCall(TypedDict):
    name: str
    arguments: str  # JSON text


class OpenAIToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: OpenAIFunctionCall


class OpenAIMessage(TypedDict):
    """An OpenAI chat message, the format litellm takes for every provider."""

    role: str
    content: str | None
    tool_calls: NotRequired[list[OpenAIToolCall]]
    tool_call_id: NotRequired[str]


def text_of(parts: list[Part]) -> str:
    """The message's text: its text parts joined."""
    return "".join(p["content"] for p in parts if p["type"] == "text")


def to_openai_messages(messages: list[Message]) -> list[OpenAIMessage]:
    """Native messages as OpenAI chat messages, the format litellm takes for every provider.

    Reasoning parts are not sent back (providers reject or ignore them in history); each
    `tool_call_response` part becomes its own `tool` message.
    """
    out: list[OpenAIMessage] = []
    for msg in messages:
        texts = [p["content"] for p in msg["parts"] if p["type"] == "text"]
        calls = [p for p in msg["parts"] if p["type"] == "tool_call"]
        responses = [p for p in msg["parts"] if p["type"] == "tool_call_response"]
        if texts or calls or not responses:
            chat: OpenAIMessage = {"role": "assistant" if msg["role"] == "tool" else msg["role"], "content": None}
            chat["content"] = "\n".join(texts) if texts else (None if calls else "")
            if calls:
                chat["tool_calls"] = [
                    {
                        "id": c.get("id") or f"call_{len(out)}_{k}",
                        "type": "function",
                        "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)},
                    }
                    for k, c in enumerate(calls)
                ]
            out.append(chat)
        for resp in responses:
            body = resp["response"]
            content = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
            out.append({"role": "tool", "tool_call_id": resp.get("id") or "", "content": content})
    return out


def content_hash(messages: list[Message], tools: list[ToolDefinition] | None = None, metadata: JSONObject | None = None) -> str:
    """A fingerprint of what a conversation says (roles, parts, generation; its tools and metadata when it
    has them), ignoring message ids. A conversation without tools or metadata hashes as it always did."""
    canonical: JSONValue = [{"role": m["role"], "parts": m["parts"], "generation": m.get("generation")} for m in messages]
    if tools is not None or metadata is not None:
        canonical = {"messages": canonical, "tools": tools, "metadata": metadata}
    text = jsonlimits.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
