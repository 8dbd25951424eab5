"""Structured output on every OpenAI-compatible server: the `response_format` mode that works, learned once.

Servers differ: OpenAI, vLLM and llama.cpp's `llama-server` take a strict `json_schema`;
llama-cpp-python rejects it (HTTP 500, "Input should be 'text' or 'json_object'") but grammar-constrains
`{"type": "json_object", "schema": ...}`; others know only `json_object`, or nothing. In `auto`, a run
tries the modes in this order and keeps the first one the server accepts, per endpoint and model:

    json_schema  ->  json_object (schema attached)  ->  json_object_plain  ->  prompt (no response_format)

Until a mode is settled, the first calls go out together in `json_schema`, which most servers take, so
no evaluation waits for another's probe (with a judge that takes seconds, every worker would otherwise
wait out the first call). If the server rejects it, each of those calls (at most the run's concurrency)
is rejected once, and the later modes are probed by one call at a time, under a lock: one rejected
request per mode after the first. A user can pin a mode (`auto|json_schema|json_object|
prompt`); a pinned mode is used as it is, with no fallback. In every mode but `json_schema` the JSON
instructions and the schema also go into the prompt, and the reply is repaired and checked as before.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from experiment_runner.conversation import JSONObject, OpenAIMessage
from experiment_runner.errors import BadInputError, ModelCallError

SETTINGS = ("auto", "json_schema", "json_object", "prompt")
FALLBACK = ("json_schema", "json_object", "json_object_plain", "prompt")
T = TypeVar("T")
log = logging.getLogger(__name__)


def check_setting(value: str | None, what: str) -> str:
    """A valid response-format setting (default `auto`), or `BadInputError` naming the option."""
    value = value or "auto"
    if value not in SETTINGS:
        raise BadInputError(f"{what} must be one of {', '.join(SETTINGS)}, got {value!r}")
    return value


def request_kwargs(mode: str, name: str, schema: JSONObject) -> JSONObject:
    """The `response_format` argument for `mode` (none for `prompt`)."""
    if mode == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}}
    if mode == "json_object":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if mode == "json_object_plain":
        return {"response_format": {"type": "json_object"}}
    return {}


def with_instructions(mode: str, messages: list[OpenAIMessage], schema: JSONObject) -> list[OpenAIMessage]:
    """`messages` with the JSON instructions appended to the last one, unless the server enforces the schema."""
    if mode == "json_schema" or not messages:
        return messages
    note = "\n\nAnswer with one JSON object only, no other text, valid against this JSON Schema:\n" + json.dumps(schema, ensure_ascii=False)
    last = messages[-1].copy()
    content = last.get("content")
    last["content"] = (content if isinstance(content, str) else "") + note if not isinstance(content, list) else [
        *content, {"type": "text", "text": note}
    ]
    return [*messages[:-1], last]


class _Refused(Exception):
    """The server refused the response format a call used (`FormatLearner` has moved on to the next)."""


class FormatLearner:
    """The mode that works for one endpoint and model in this run: probed on first use, then reused."""

    def __init__(self, setting: str = "auto", learned: str | None = None):
        self.setting = check_setting(setting, "response format")
        pinned = self.setting if self.setting != "auto" else learned
        self.mode = pinned or FALLBACK[0]
        self.settled = pinned is not None
        self.rejected: list[str] = []  # the rejection messages seen while probing
        self._lock = anyio.Lock()

    async def call(self, send: Callable[[str], Awaitable[T]]) -> T:
        """`send(mode)` with the learned mode. While none is learned: the first mode, by every caller at once,
        until the server rejects it; then the next modes in order, one caller at a time."""
        if self.settled:
            return await send(self.mode)
        if not self.rejected:
            try:
                return await self._attempt(send, self.mode)
            except _Refused:
                pass
        async with self._lock:
            while not self.settled:
                try:
                    return await self._attempt(send, self.mode)
                except _Refused:
                    continue
        return await send(self.mode)

    async def _attempt(self, send: Callable[[str], Awaitable[T]], mode: str) -> T:
        """`send(mode)`, settling on `mode` when it answers; `_Refused` (having moved on) when the server
        refused the format, unless `mode` was the last to try; any other error as it is."""
        try:
            result = await send(mode)
        except ModelCallError as exc:
            if not exc.format_rejected or mode == FALLBACK[-1]:
                raise
            self._reject(mode, exc)
            raise _Refused from exc
        self.settled = self.settled or mode == self.mode
        return result

    def _reject(self, mode: str, exc: ModelCallError) -> None:
        """The server refused `mode`: move on to the next one (once, however many calls were refused it)."""
        if mode != self.mode or self.settled:
            return
        self.rejected.append(f"{mode}: {exc}")
        self.mode = FALLBACK[FALLBACK.index(mode) + 1]
        log.info("structured output: the server rejected response format %s (%s); trying %s", mode, exc, self.mode)
