"""The messages of one inference span, from its attributes, as native messages (see `otlp.py`).

Current GenAI conventions: `gen_ai.system_instructions`, `gen_ai.input.messages`, `gen_ai.output.messages`
(JSON strings or OTLP array/kvlist values; parts text, tool_call, tool_call_response and reasoning map
1:1, other part types are kept as they are). Older ones (OpenLLMetry): `gen_ai.prompt.N.*` and
`gen_ai.completion.N.*`, with `tool_calls.M.id/name/arguments` and `tool_call_id`.
"""

import json
import re
from dataclasses import dataclass
from typing import Any, cast

from experiment_runner import jsonlimits
from experiment_runner.conversation import JSONObject, Message, Part

SEMCONV_KEYS = ("gen_ai.system_instructions", "gen_ai.input.messages", "gen_ai.output.messages")
_LEGACY = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(.+)$")
_TOOL_CALL = re.compile(r"^tool_calls\.(\d+)\.(id|name|arguments)$")

Messages = tuple[list[Message], "Output | None"]


@dataclass(frozen=True)
class Output:
    """The span's reply: a native message (no generation yet) and its own finish reason, if given."""

    message: Message
    finish_reason: str | None


def json_value(value: Any, key: str) -> Any:
    """An attribute that holds JSON: a string is parsed (within `jsonlimits`); array/kvlist values are already Python."""
    if not isinstance(value, str):
        return value
    try:
        return jsonlimits.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{key} is not valid JSON ({exc.msg})") from None
    except jsonlimits.JSONLimitError as exc:
        raise jsonlimits.prefixed(exc, key) from None


def semconv_messages(attrs: JSONObject) -> Messages | None:
    """History and output from the current conventions' attributes, or None when the span has none."""
    if not any(attrs.get(key) is not None for key in SEMCONV_KEYS):
        return None
    history: list[Message] = []
    instructions = json_value(attrs.get("gen_ai.system_instructions"), "gen_ai.system_instructions")
    if instructions:
        parts = instructions if isinstance(instructions, list) else [instructions]
        history.append({"role": "system", "parts": [_part({"type": "text", "content": p} if isinstance(p, str) else p) for p in parts]})
    history += [_message(m, "gen_ai.input.messages") for m in _messages(attrs, "gen_ai.input.messages")]
    outputs = _messages(attrs, "gen_ai.output.messages")
    if not outputs:
        return history, None
    first = outputs[0]
    reason = first.get("finish_reason") if isinstance(first, dict) else None
    return history, Output(_message(first, "gen_ai.output.messages"), reason if isinstance(reason, str) else None)


def _messages(attrs: JSONObject, key: str) -> list[Any]:
    value = json_value(attrs.get(key), key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a JSON array of messages")
    return value


def _message(msg: Any, key: str) -> Message:
    if not isinstance(msg, dict) or not isinstance(msg.get("parts", []), list):
        raise ValueError(f"{key}: a message must be an object with a 'parts' list, got {jsonlimits.short(msg)}")
    return {"role": msg.get("role", "assistant"), "parts": [_part(p) for p in msg.get("parts", [])]}


def _part(part: Any) -> Part:
    """One GenAI part as ours: the four known types field by field, any other type as it is."""
    if not isinstance(part, dict):
        raise ValueError(f"a part must be an object, got {jsonlimits.short(part)}")
    kind = part.get("type")
    if kind in ("text", "reasoning"):
        return cast(Part, {"type": kind, "content": part.get("content")})  # checked by `formats.normalize_conversation`
    if kind == "tool_call":
        return cast(Part, {"type": kind, "id": part.get("id"), "name": part.get("name"), "arguments": arguments(part.get("arguments"))})
    if kind == "tool_call_response":
        return {"type": kind, "id": part.get("id"), "response": part.get("response")}
    return cast(Part, dict(part))  # another GenAI part type, kept as it came


def arguments(value: Any) -> JSONObject:
    """Tool-call arguments as an object (a JSON string is parsed)."""
    if value is None or value == "":
        return {}
    parsed = json_value(value, "tool call arguments")
    if not isinstance(parsed, dict):
        raise ValueError(f"tool call arguments must be a JSON object, got {jsonlimits.short(value)}")
    return parsed


def legacy_messages(attrs: JSONObject) -> Messages | None:
    """History and output from OpenLLMetry's indexed attributes, or None when the span has none."""
    fields: dict[str, dict[int, JSONObject]] = {"prompt": {}, "completion": {}}
    for key, value in attrs.items():
        match = _LEGACY.match(key)
        if match:
            fields[match[1]].setdefault(int(match[2]), {})[match[3]] = value
    if not fields["prompt"] and not fields["completion"]:
        return None
    history = [_legacy_message(fields["prompt"][n], "user") for n in sorted(fields["prompt"])]
    if not fields["completion"]:
        return history, None
    first = fields["completion"][min(fields["completion"])]
    reason = first.get("finish_reason")
    return history, Output(_legacy_message(first, "assistant"), reason if isinstance(reason, str) else None)


def _legacy_message(fields: JSONObject, default_role: str) -> Message:
    role = fields.get("role") or default_role
    content = fields.get("content")
    if role == "tool":
        response = content if content is not None else ""
        return {"role": "tool", "parts": [{"type": "tool_call_response", "id": fields.get("tool_call_id"), "response": response}]}
    calls: dict[int, JSONObject] = {}
    for key, value in fields.items():
        match = _TOOL_CALL.match(key)
        if match:
            calls.setdefault(int(match[1]), {})[match[2]] = value
    parts = _content_parts(content)
    parts += [
        cast(Part, {"type": "tool_call", "id": c.get("id"), "name": c.get("name"), "arguments": arguments(c.get("arguments"))})
        for _, c in sorted(calls.items())
    ]
    return cast(Message, {"role": role, "parts": parts})


def _content_parts(content: Any) -> list[Part]:
    """OpenLLMetry content: a string, or a JSON list of `{"type": "text", "text"}` blocks."""
    if content is None or content == "":
        return []
    if isinstance(content, str) and content.lstrip().startswith("["):
        try:
            blocks = jsonlimits.loads(content)
        except ValueError:  # not JSON, or past a limit: kept as text
            blocks = None
        if isinstance(blocks, list) and all(isinstance(b, dict) and isinstance(b.get("text"), str) for b in blocks):
            return [{"type": "text", "content": b["text"]} for b in blocks]
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return [{"type": "text", "content": text}]
