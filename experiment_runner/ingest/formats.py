"""Conversation formats: validate the native parts shape, convert OpenAI chat to it (and back: `conversation`).

Native (the export's shape): `{"id"?, "messages": [{"role", "parts": [...], "generation"?}]}` with
OpenTelemetry GenAI parts `text`, `tool_call`, `tool_call_response` and `reasoning`.
OpenAI chat: `{"id"?, "messages": [{"role", "content", "tool_calls"?, "tool_call_id"?}]}`.
Both may carry the OpenAI fine-tuning/logging format's top-level `tools` (function definitions, declared
to the target on replay) and `metadata` (an object, kept as it is). `developer` (OpenAI's newer name for
the system role) is read as a system message and kept as `developer`.
Pure functions; errors are `ValueError`s whose message the importer prefixes with file and line.
"""

import json
from typing import Any, cast

from experiment_runner import jsonlimits
from experiment_runner.conversation import ROLES, Conversation, Generation, JSONObject, Message, Part, ToolCallPart, ToolDefinition
from experiment_runner.jsonlimits import MAX_DEPTH

__all__ = ["MAX_DEPTH", "normalize_conversation"]

ARGUMENTS_LEVEL = 6  # the nesting level of a tool_call part's `arguments` in a conversation
GENERATION_KEYS = ("model", "provider", "input_tokens", "output_tokens", "cost_usd", "latency_ms", "finish_reasons")


def normalize_conversation(obj: Any, *, keep_unknown_parts: bool = False) -> Conversation:
    """Validate one conversation in either import shape; return it native:
    `{"id": str|None, "messages": [...], "tools": list|None, "metadata": dict|None}`.

    `keep_unknown_parts` keeps parts of other types as they are (OTLP traces may carry any GenAI part type).
    Limits (depth, numbers, NaN) raise `jsonlimits.JSONLimitError`, checked again on the result, since
    JSON held in strings (tool-call `arguments`) is parsed here."""
    if not isinstance(obj, dict):
        raise ValueError(f"a conversation must be a JSON object, not {type(obj).__name__}")
    _check_values(obj)
    conv_id = obj.get("id")
    if conv_id is not None and (not isinstance(conv_id, str) or not conv_id.strip()):
        raise ValueError("conversation 'id' must be a non-empty string")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("conversation needs a non-empty 'messages' list")
    native: list[Message] = []
    calls: set[str] = set()
    for i, message in enumerate(messages):
        normalized = _normalize_message(message, i, keep_unknown_parts)
        if normalized["role"] == "tool" and "parts" not in message:  # an OpenAI tool message answers an earlier call
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ValueError(f"message {i}: a tool message needs a 'tool_call_id' naming an earlier tool call")
            if call_id not in calls:
                raise ValueError(f"message {i}: tool_call_id {call_id!r} matches no earlier tool call")
        calls.update(call_id for p in normalized["parts"] if p["type"] == "tool_call" and isinstance(call_id := p.get("id"), str))
        native.append(normalized)
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError("conversation 'metadata' must be a JSON object")
    return {"id": conv_id, "messages": native, "tools": _check_tools(obj.get("tools")), "metadata": metadata}


def _check_tools(tools: Any) -> list[ToolDefinition] | None:
    """The conversation's `tools`: OpenAI function definitions `{"type": "function", "function": {"name", ...}}`."""
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise ValueError("conversation 'tools' must be a list of tool definitions")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise ValueError(f"tools[{i}]: must be {{\"type\": \"function\", \"function\": {{\"name\", ...}}}}")
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise ValueError(f"tools[{i}]: the function needs a 'name'")
        if not isinstance(function.get("parameters", {}), dict):
            raise ValueError(f"tools[{i}]: 'parameters' must be a JSON Schema object")
    return [cast(ToolDefinition, {**tool, "type": "function"}) for tool in tools]


def _check_values(obj: Any) -> None:
    """Within the JSON limits (`jsonlimits`: depth, numbers), and every key and string valid Unicode (no lone
    surrogate). The depth walk visits containers only; one C-speed `json.dumps` checks strings and floats."""
    jsonlimits.check_depth(obj)
    try:
        json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone surrogate (\\ud800-\\udfff without its pair)") from None
    except ValueError:  # allow_nan=False: a NaN or an infinity
        jsonlimits.check_value(obj)  # raises the limit's own message
        raise


def _normalize_message(msg: Any, index: int, keep_unknown_parts: bool = False) -> Message:
    where = f"message {index}"
    if not isinstance(msg, dict):
        raise ValueError(f"{where}: must be a JSON object")
    role = msg.get("role")
    if role not in ROLES:
        raise ValueError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    if "parts" in msg:
        parts = msg["parts"]
        if not isinstance(parts, list):
            raise ValueError(f"{where}: 'parts' must be a list")
        parts = [_check_part(p, f"{where} part {j}", keep_unknown_parts) for j, p in enumerate(parts)]
    elif "content" in msg or "tool_calls" in msg:
        parts = _openai_parts(msg, where)
    else:
        raise ValueError(f"{where}: needs 'parts' (native) or 'content' (OpenAI chat)")
    out: Message = {"role": role, "parts": parts, "generation": _check_generation(msg.get("generation"), where)}
    if isinstance(msg.get("id"), str) and msg["id"]:
        out["id"] = msg["id"]
    return out


def _check_part(part: Any, where: str, keep_unknown: bool = False) -> Part:
    if not isinstance(part, dict):
        raise ValueError(f"{where}: must be a JSON object")
    checked: JSONObject = part
    kind = checked.get("type")
    if keep_unknown and kind not in ("text", "reasoning", "tool_call", "tool_call_response"):
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"{where}: a part needs a string 'type'")
        return cast(Part, checked)  # another GenAI part type, kept as it came (readers skip types they do not know)
    if kind in ("text", "reasoning"):
        if not isinstance(checked.get("content"), str):
            raise ValueError(f"{where}: a {kind} part needs a string 'content'")
    elif kind == "tool_call":
        if not isinstance(checked.get("name"), str) or not checked["name"]:
            raise ValueError(f"{where}: a tool_call part needs a 'name'")
        if not isinstance(checked.get("arguments", {}), dict):
            raise ValueError(f"{where}: a tool_call part's 'arguments' must be a JSON object")
        checked = {**checked, "arguments": checked.get("arguments", {})}
    elif kind == "tool_call_response":
        if "response" not in checked:
            raise ValueError(f"{where}: a tool_call_response part needs a 'response'")
    else:
        raise ValueError(f"{where}: unknown part type {kind!r} (text, tool_call, tool_call_response, reasoning)")
    if kind in ("tool_call", "tool_call_response") and checked.get("id") is not None and not isinstance(checked["id"], str):
        raise ValueError(f"{where}: 'id' must be a string")
    return cast(Part, checked)


def _check_generation(gen: Any, where: str) -> Generation | None:
    if gen is None:
        return None
    if not isinstance(gen, dict) or not isinstance(gen.get("model"), str):
        raise ValueError(f"{where}: 'generation' must be an object with a string 'model'")
    out = {key: gen.get(key) for key in GENERATION_KEYS}
    for key, kinds, noun in (("input_tokens", int, "integer"), ("output_tokens", int, "integer"),
                             ("cost_usd", int | float, "number"), ("latency_ms", int | float, "number")):
        value = out[key]
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{where}: generation.{key} must be a non-negative {noun} or null")
    reasons = out["finish_reasons"]
    if reasons is not None and (not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons)):
        raise ValueError(f"{where}: generation.finish_reasons must be a list of strings or null")
    return cast(Generation, out)


def _openai_parts(msg: JSONObject, where: str) -> list[Part]:
    """The native parts of one OpenAI chat message."""
    parts: list[Part] = []
    if isinstance(msg.get("reasoning_content"), str) and msg["reasoning_content"]:
        parts.append({"type": "reasoning", "content": msg["reasoning_content"]})
    text_parts = _content_parts(msg.get("content"), where)
    if msg["role"] == "tool":
        response = "".join(p["content"] for p in text_parts if p["type"] == "text")
        return [{"type": "tool_call_response", "id": msg.get("tool_call_id"), "response": response}]
    parts.extend(text_parts)
    for j, call in enumerate(msg.get("tool_calls") or []):
        parts.append(_openai_tool_call(call, f"{where} tool_calls[{j}]"))
    return parts


def _content_parts(content: Any, where: str) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}] if content else []
    if not isinstance(content, list):
        raise ValueError(f"{where}: 'content' must be a string, a list of blocks or null")
    parts: list[Part] = []
    for j, block in enumerate(content):
        if isinstance(block, str):
            parts.append({"type": "text", "content": block})
        elif isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "content": block["text"]})
        elif isinstance(block, dict) and block.get("type") in ("thinking", "reasoning"):
            parts.append({"type": "reasoning", "content": str(block.get("thinking") or block.get("text") or "")})
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(f"{where}: content block {j} of type {kind!r} is not supported (text only)")
    return parts


def _openai_tool_call(call: Any, where: str) -> ToolCallPart:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise ValueError(f"{where}: needs 'function' with a 'name'")
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            arguments = jsonlimits.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: 'arguments' is not valid JSON ({exc.msg})") from None
        except jsonlimits.JSONLimitError as exc:
            raise jsonlimits.prefixed(exc, f"{where}: 'arguments'") from None
        if isinstance(arguments, dict):  # stored as the part's `arguments`: conversation > messages > message > parts > part > here
            jsonlimits.check_depth(arguments, depth=ARGUMENTS_LEVEL)
    if not isinstance(arguments, dict):
        raise ValueError(f"{where}: 'arguments' must encode a JSON object")
    return {"type": "tool_call", "id": call.get("id"), "name": function["name"], "arguments": arguments}
