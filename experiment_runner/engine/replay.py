"""What a replay sends and what it stores, as pure functions over native messages.

The history is every message before the final assistant reply (all messages when the conversation does
not end with an assistant message). `--system-prompt` replaces the first system (or `developer`) message's
text, or is added in front. The tools declared to the target are the conversation's own definitions when
it was imported with them (the OpenAI fine-tuning/logging format's top-level `tools`); a tool the history
calls that they do not define, or every tool when there are none, is declared again from its calls (name,
and an object schema with the argument names seen) so that the target model can call the same tools.
"""

from typing import Any

from experiment_runner.engine.structured import request_kwargs, with_instructions
from experiment_runner.ingest.formats import SYSTEM_ROLES, to_openai_messages
from experiment_runner.store.ids import new_id

JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}


def split_reply(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(history, final assistant message or None)."""
    if messages and messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]
    return messages, None


def with_system_prompt(messages: list[dict[str, Any]], prompt: str | None) -> list[dict[str, Any]]:
    """The messages with the first system (or developer) message's text replaced by `prompt` (or one added first)."""
    if prompt is None:
        return messages
    system = {"role": "system", "parts": [{"type": "text", "content": prompt}], "generation": None}
    for index, message in enumerate(messages):
        if message["role"] in SYSTEM_ROLES:
            return [*messages[:index], {**message, "parts": system["parts"]}, *messages[index + 1 :]]
    return [system, *messages]


def tool_definitions(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI `tools` declaring every tool the history called, with the argument names and types seen."""
    tools: dict[str, dict[str, Any]] = {}
    for message in history:
        for part in message["parts"]:
            if part["type"] != "tool_call":
                continue
            props = tools.setdefault(part["name"], {})
            for name, value in part["arguments"].items():
                props.setdefault(name, {"type": JSON_TYPES.get(type(value), "string")})
    return [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": props}}}
        for name, props in tools.items()
    ]


def declared_tools(history: list[dict[str, Any]], stored: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The stored definitions, then one rebuilt from its calls for each called tool they do not define."""
    defined = {tool["function"]["name"] for tool in stored or []}
    return [*(stored or []), *(t for t in tool_definitions(history) if t["function"]["name"] not in defined)]


def replay_request(history: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The `messages` (and `tools`: the conversation's stored `tools`, else rebuilt from the history's calls)."""
    request: dict[str, Any] = {"messages": to_openai_messages(history)}
    tools = declared_tools(history, tools)
    if tools:
        request["tools"] = tools
    return request


def target_call(
    request: dict[str, Any], mode: str, schema: dict[str, Any] | None, settings: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages and litellm arguments of a target call: the replay `request`, the reasoning `settings`,
    and, with an output `schema`, the structured-output `mode`'s format and instructions.

    One builder for the live call, the batch job's request body and the dry run's cache look-up."""
    messages = request["messages"]
    kwargs = {k: v for k, v in request.items() if k != "messages"} | settings
    if schema is None:
        return messages, kwargs
    return with_instructions(mode, messages, schema), kwargs | request_kwargs(mode, "output", schema)


def result_messages(
    history: list[dict[str, Any]], reply_parts: list[dict[str, Any]] | None, generation: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The result conversation's messages: the history copied with new ids, then the reply (if any)."""
    copied = [
        {"id": new_id(), "role": m["role"], "parts": m["parts"], "sequence_number": i, "generation": m.get("generation")}
        for i, m in enumerate(history)
    ]
    if reply_parts is not None:
        copied.append(
            {"id": new_id(), "role": "assistant", "parts": reply_parts, "sequence_number": len(copied), "generation": generation}
        )
    return copied
