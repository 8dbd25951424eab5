"""What a replay sends and what it stores, as pure functions over native messages.

The history is every message before the final assistant reply (all messages when the conversation does
not end with an assistant message). `--system-prompt` replaces the first system (or `developer`) message's
text, or is added in front. The tools declared to the target are the conversation's own definitions when
it was imported with them (the OpenAI fine-tuning/logging format's top-level `tools`); a tool the history
calls that they do not define, or every tool when there are none, is declared again from its calls (name,
and an object schema with the argument names seen) so that the target model can call the same tools.
"""

from typing import NotRequired, TypedDict

from experiment_runner.conversation import SYSTEM_ROLES, Generation, JSONObject, Message, OpenAIMessage, Part, ToolDefinition, to_openai_messages
from experiment_runner.engine.structured import request_kwargs, with_instructions
from experiment_runner.store.ids import new_id


class Request(TypedDict):
    """A replay's request: the history as OpenAI messages, and the tools declared to the target."""

    messages: list[OpenAIMessage]
    tools: NotRequired[list[ToolDefinition]]


JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}


def split_reply(messages: list[Message]) -> tuple[list[Message], Message | None]:
    """(history, final assistant message or None)."""
    if messages and messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]
    return messages, None


def with_system_prompt(messages: list[Message], prompt: str | None) -> list[Message]:
    """The messages with the first system (or developer) message's text replaced by `prompt` (or one added first)."""
    if prompt is None:
        return messages
    system: Message = {"role": "system", "parts": [{"type": "text", "content": prompt}], "generation": None}
    for index, message in enumerate(messages):
        if message["role"] in SYSTEM_ROLES:
            return [*messages[:index], {**message, "parts": system["parts"]}, *messages[index + 1 :]]
    return [system, *messages]


def tool_definitions(history: list[Message]) -> list[ToolDefinition]:
    """OpenAI `tools` declaring every tool the history called, with the argument names and types seen."""
    tools: dict[str, dict[str, JSONObject]] = {}
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


def declared_tools(history: list[Message], stored: list[ToolDefinition] | None) -> list[ToolDefinition]:
    """The stored definitions, then one rebuilt from its calls for each called tool they do not define."""
    defined = {tool["function"]["name"] for tool in stored or []}
    return [*(stored or []), *(t for t in tool_definitions(history) if t["function"]["name"] not in defined)]


def replay_request(history: list[Message], tools: list[ToolDefinition] | None = None) -> Request:
    """The `messages` (and `tools`: the conversation's stored `tools`, else rebuilt from the history's calls)."""
    request: Request = {"messages": to_openai_messages(history)}
    tools = declared_tools(history, tools)
    if tools:
        request["tools"] = tools
    return request


def target_call(
    request: Request, mode: str, schema: JSONObject | None, settings: JSONObject
) -> tuple[list[OpenAIMessage], JSONObject]:
    """The messages and litellm arguments of a target call: the replay `request`, the reasoning `settings`,
    and, with an output `schema`, the structured-output `mode`'s format and instructions.

    One builder for the live call, the batch job's request body and the dry run's cache look-up."""
    messages = request["messages"]
    kwargs = {k: v for k, v in request.items() if k != "messages"} | settings
    if schema is None:
        return messages, kwargs
    return with_instructions(mode, messages, schema), kwargs | request_kwargs(mode, "output", schema)


def result_messages(
    history: list[Message], reply_parts: list[Part] | None, generation: Generation | None
) -> list[Message]:
    """The result conversation's messages: the history copied with new ids, then the reply (if any)."""
    copied: list[Message] = [
        {"id": new_id(), "role": m["role"], "parts": m["parts"], "sequence_number": i, "generation": m.get("generation")}
        for i, m in enumerate(history)
    ]
    if reply_parts is not None:
        copied.append(
            {"id": new_id(), "role": "assistant", "parts": reply_parts, "sequence_number": len(copied), "generation": generation}
        )
    return copied
