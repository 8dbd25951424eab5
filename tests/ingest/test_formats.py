"""OpenAI chat <-> native conversion and validation."""

import pytest

from experiment_runner.conversation import Message, content_hash, to_openai_messages
from experiment_runner.ingest.formats import normalize_conversation

OPENAI = {
    "id": "c1",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Oslo?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "forecast", "arguments": '{"city": "Oslo", "days": 2}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"rain": true}'},
        {"role": "assistant", "reasoning_content": "It rains.", "content": "Rain in Oslo."},
    ],
}


def test_openai_chat_becomes_native_parts() -> None:
    conv = normalize_conversation(OPENAI)
    parts = [m["parts"] for m in conv["messages"]]
    assert parts[0] == [{"type": "text", "content": "Be brief."}]
    assert parts[1] == [{"type": "text", "content": "Weather "}, {"type": "text", "content": "in Oslo?"}]
    assert parts[2] == [{"type": "tool_call", "id": "call_1", "name": "forecast", "arguments": {"city": "Oslo", "days": 2}}]
    assert conv["messages"][3]["role"] == "tool"
    assert parts[3] == [{"type": "tool_call_response", "id": "call_1", "response": '{"rain": true}'}]
    assert parts[4] == [{"type": "reasoning", "content": "It rains."}, {"type": "text", "content": "Rain in Oslo."}]
    assert all(m["generation"] is None for m in conv["messages"])


def test_native_back_to_openai_for_replay() -> None:
    native = normalize_conversation(OPENAI)["messages"]
    chat = to_openai_messages(native[:4])
    assert chat[0] == {"role": "system", "content": "Be brief."}
    assert chat[1] == {"role": "user", "content": "Weather \nin Oslo?"}
    assert chat[2]["content"] is None
    assert chat[2]["tool_calls"][0]["function"] == {"name": "forecast", "arguments": '{"city": "Oslo", "days": 2}'}
    assert chat[3] == {"role": "tool", "tool_call_id": "call_1", "content": '{"rain": true}'}


def test_reasoning_is_not_replayed_and_object_responses_are_json() -> None:
    native: list[Message] = [
        {"role": "assistant", "parts": [{"type": "reasoning", "content": "hmm"}, {"type": "text", "content": "Hi"}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "x", "response": {"ok": True}}]},
    ]
    assert to_openai_messages(native) == [
        {"role": "assistant", "content": "Hi"},
        {"role": "tool", "tool_call_id": "x", "content": '{"ok": true}'},
    ]


def test_generation_is_completed_with_nulls() -> None:
    conv = normalize_conversation({"messages": [{"role": "assistant", "parts": [], "generation": {"model": "m"}}]})
    assert conv["messages"][0]["generation"] == {
        "model": "m", "provider": None, "input_tokens": None, "output_tokens": None,
        "cost_usd": None, "latency_ms": None, "finish_reasons": None,
    }


@pytest.mark.parametrize(
    ("conv", "message"),
    [
        ([], "must be a JSON object"),
        ({"messages": []}, "non-empty 'messages'"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role must be one of"),
        ({"messages": [{"role": "user"}]}, "needs 'parts'"),
        ({"messages": [{"role": "user", "parts": [{"type": "image"}]}]}, "unknown part type"),
        ({"messages": [{"role": "user", "parts": [{"type": "text"}]}]}, "string 'content'"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "not supported"),
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]}, "not valid JSON"),
        ({"messages": [{"role": "assistant", "parts": [], "generation": {"model": "m", "input_tokens": -1}}]}, "non-negative"),
        ({"id": "", "messages": [{"role": "user", "content": "x"}]}, "non-empty string"),
    ],
)
def test_invalid_conversations_are_rejected(conv: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_conversation(conv)


def test_content_hash_ignores_message_ids_but_not_content() -> None:
    a: list[Message] = [{"role": "user", "parts": [{"type": "text", "content": "x"}], "generation": None}]
    b: list[Message] = [{**a[0], "id": "m1"}]
    c: list[Message] = [{"role": "user", "parts": [{"type": "text", "content": "y"}], "generation": None}]
    assert content_hash(a) == content_hash(b) != content_hash(c)
