"""OpenTelemetry GenAI traces (OTLP/JSON `ExportTraceServiceRequest`s) to native conversations.

Inference spans (`gen_ai.operation.name` chat / text_completion / generate_content, or older spans with
`gen_ai.prompt.*`/`gen_ai.completion.*` attributes) carry the messages; every other span is skipped and
counted. Spans group by `gen_ai.conversation.id` (their own, else the nearest ancestor's in the same
trace), else by trace id (hex); the inference span of a group that ends last supplies the conversation:
its input messages plus its output message, which carries the span's generation metadata.
Pure functions; errors are `ValueError`s that start with "FILE:LINE: span SPAN_ID: ..." (a
`jsonlimits.JSONLimitError` for a value past the JSON limits, such as a 5000-digit `intValue`).
"""

import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from experiment_runner.conversation import Conversation, Generation, JSONObject, Message, finish_reason
from experiment_runner.ingest.otlp_messages import legacy_messages, semconv_messages
from experiment_runner.jsonlimits import JSONLimitError, prefixed, short, to_int64

INFERENCE_OPERATIONS = frozenset({"chat", "text_completion", "generate_content"})
_HEX = re.compile(r"^[0-9a-fA-F]+$")


@dataclass(frozen=True)
class Span:
    """One span, decoded: hex ids, times in ns (None when absent), attributes as Python values."""

    trace_id: str
    span_id: str
    parent_id: str | None
    start: int | None
    end: int | None
    attributes: JSONObject
    where: str  # "file:line" of the request it came in


@dataclass(frozen=True)
class FoundConversation:
    """A conversation made from spans: where its supplying span was read, and the native object."""

    where: str
    conversation: Conversation


@dataclass
class TraceConversations:
    """What a set of OTLP requests holds: conversations, spans read, and spans skipped (not inference)."""

    conversations: list[FoundConversation] = field(default_factory=list)
    spans: int = 0
    skipped: int = 0


def is_otlp(obj: Any) -> bool:
    """True for an `ExportTraceServiceRequest` object (it has `resourceSpans`)."""
    return isinstance(obj, dict) and "resourceSpans" in obj


def conversations_from_requests(requests: Iterable[tuple[Any, str]], *, each_span: bool = False) -> TraceConversations:
    """Native conversations from `(request, where)` pairs; `each_span` makes one per inference span."""
    spans: dict[tuple[str, str], Span] = {}
    for request, where in requests:
        try:
            decoded = request_spans(request, where)
        except ValueError as exc:
            raise prefixed(exc, where) from None
        for span in decoded:
            spans.setdefault((span.trace_id, span.span_id), span)
    result = TraceConversations(spans=len(spans))
    inference = [s for s in spans.values() if is_inference(s)]
    result.skipped = len(spans) - len(inference)
    if each_span:
        groups = {f"{s.trace_id}-{s.span_id}": [s] for s in inference}
    else:
        groups = _group(inference, spans)
    messages = {}
    for span in inference:  # every inference span is read, so a malformed one is reported even if unused
        try:
            messages[span.span_id, span.trace_id] = span_messages(span)
        except ValueError as exc:
            raise prefixed(exc, span.where) from None
    for conv_id, members in groups.items():
        last = max(members, key=lambda s: (s.end or s.start or 0))
        found: Conversation = {"id": conv_id, "messages": messages[last.span_id, last.trace_id]}
        result.conversations.append(FoundConversation(f"{last.where}: span {last.span_id}", found))
    return result


def _group(inference: list[Span], spans: dict[tuple[str, str], Span]) -> dict[str, list[Span]]:
    """Inference spans by conversation id, in the order groups first appear."""
    groups: dict[str, list[Span]] = {}
    for span in inference:
        groups.setdefault(conversation_id(span, spans), []).append(span)
    return groups


def conversation_id(span: Span, spans: dict[tuple[str, str], Span]) -> str:
    """`gen_ai.conversation.id` of the span or its nearest ancestor in the same trace, else the trace id."""
    current: Span | None = span
    seen: set[str] = set()
    while current is not None and current.span_id not in seen:
        value = current.attributes.get("gen_ai.conversation.id")
        if isinstance(value, str) and value:
            return value
        seen.add(current.span_id)
        current = spans.get((span.trace_id, current.parent_id)) if current.parent_id else None
    return span.trace_id


def request_spans(request: Any, where: str) -> list[Span]:
    """Every span of one `ExportTraceServiceRequest`, decoded; a malformed one raises `ValueError`."""
    out = []
    for resource in _list(request, "resourceSpans", "request"):
        for scope in _list(resource, "scopeSpans", "resourceSpans[]"):
            for raw in _list(scope, "spans", "scopeSpans[]"):
                out.append(decode_span(raw, where))
    return out


def _list(obj: Any, key: str, what: str) -> list[Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"OTLP: {what} must be a JSON object")
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"OTLP: {what}.{key} must be a list")
    return value


def decode_span(raw: Any, where: str) -> Span:
    """One OTLP/JSON span as a `Span`; ids may be hex (OTLP/JSON) or base64 (plain protobuf JSON)."""
    if not isinstance(raw, dict):
        raise ValueError("OTLP: a span must be a JSON object")
    span_id = _hex_id(raw.get("spanId"), 8, "span ?", "spanId")
    label = f"span {span_id}"
    trace_id = _hex_id(raw.get("traceId"), 16, label, "traceId")
    parent = raw.get("parentSpanId")
    parent_id = _hex_id(parent, 8, label, "parentSpanId") if parent else None
    try:
        attributes = decode_attributes(raw.get("attributes", []))
    except ValueError as exc:
        raise prefixed(exc, label) from None
    return Span(trace_id, span_id, parent_id, _nanos(raw, "startTimeUnixNano", label), _nanos(raw, "endTimeUnixNano", label), attributes, where)


def _hex_id(value: Any, size: int, label: str, key: str) -> str:
    """A trace or span id as lowercase hex, from hex or base64 text of `size` bytes."""
    if isinstance(value, str) and len(value) == 2 * size and _HEX.match(value):
        return value.lower()
    if isinstance(value, str) and value:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == size:
            return raw.hex()
    raise ValueError(f"{label}: '{key}' must be {2 * size} hex digits, got {short(value)}")


def _int64(value: Any, where: str, bad: Callable[[], str]) -> int:
    """An OTLP 64-bit integer (JSON writes them as strings): past the limits a `JSONLimitError` led by `where`,
    anything else not an integer a `ValueError` saying `bad()`."""
    try:
        return to_int64(value)
    except JSONLimitError as exc:
        raise prefixed(exc, where) from None
    except (TypeError, ValueError):
        raise ValueError(bad()) from None


def _nanos(raw: JSONObject, key: str, label: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    return _int64(value, f"{label}: '{key}'", lambda: f"{label}: '{key}' must be an integer, got {short(value)}")


def decode_attributes(raw: Any) -> JSONObject:
    """OTLP `[{key, value: AnyValue}]` as a dict of Python values."""
    if not isinstance(raw, list):
        raise ValueError("'attributes' must be a list")
    out = {}
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise ValueError(f"an attribute needs a string 'key', got {short(item)}")
        out[item["key"]] = any_value(item.get("value"), item["key"])
    return out


def any_value(value: Any, key: str = "value") -> Any:
    """One OTLP `AnyValue` (stringValue, intValue as a string, arrayValue, kvlistValue, ...) as Python."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"attribute {key!r}: not an OTLP AnyValue: {short(value)}")
    kind, inner = next(iter(value.items()))
    if kind in ("stringValue", "boolValue", "doubleValue", "bytesValue"):
        return inner
    if kind == "intValue":
        return _int64(inner, f"attribute {key!r}: intValue", lambda: f"attribute {key!r}: intValue {short(inner)} is not an integer")
    if kind == "arrayValue":
        return [any_value(v, key) for v in (inner or {}).get("values", [])]
    if kind == "kvlistValue":
        return decode_attributes((inner or {}).get("values", []))
    raise ValueError(f"attribute {key!r}: unknown OTLP value type {kind!r}")


def is_inference(span: Span) -> bool:
    """A model call: a GenAI inference operation, or older spans with prompt/completion attributes."""
    if span.attributes.get("gen_ai.operation.name") in INFERENCE_OPERATIONS:
        return True
    return any(key.startswith(("gen_ai.prompt.", "gen_ai.completion.")) for key in span.attributes)


def span_messages(span: Span) -> list[Message]:
    """The span's input messages plus its output message, which carries the generation."""
    try:
        found = semconv_messages(span.attributes) or legacy_messages(span.attributes)
    except ValueError as exc:
        raise prefixed(exc, f"span {span.span_id}") from None
    if found is None:
        raise ValueError(f"span {span.span_id}: an inference span without messages (is content capture on?)")
    history, output = found
    if output is None:
        return history
    return [*history, {**output.message, "generation": generation(span, output.finish_reason)}]


def generation(span: Span, output_reason: str | None) -> Generation:
    """The generation metadata of an inference span (model, provider, tokens, latency, finish reasons)."""
    attrs = span.attributes
    reasons = attrs.get("gen_ai.response.finish_reasons")
    if isinstance(reasons, str):
        reasons = [reasons]
    if not isinstance(reasons, list) or not reasons:
        reasons = [output_reason] if output_reason else []
    latency = round((span.end - span.start) / 1e6, 3) if span.start and span.end and span.end >= span.start else None
    return {
        "model": _first_str(attrs, "gen_ai.response.model", "gen_ai.request.model") or "unknown",
        "provider": _first_str(attrs, "gen_ai.provider.name", "gen_ai.system"),
        "input_tokens": _first_int(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        "output_tokens": _first_int(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
        "cost_usd": None,
        "latency_ms": latency,
        "finish_reasons": [finish_reason(str(r)) for r in reasons],
    }


def _first_str(attrs: JSONObject, *keys: str) -> str | None:
    return next((attrs[k] for k in keys if isinstance(attrs.get(k), str) and attrs[k]), None)


def _first_int(attrs: JSONObject, *keys: str) -> int | None:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
