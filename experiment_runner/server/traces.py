"""`POST /v1/traces`: OTLP/HTTP trace export (JSON or protobuf) into conversations, as a collector answers.

Thin: decode the body (protobuf through `ingest.otlp_protobuf`, JSON through `jsonlimits`, the same
parsers as `import`), call `ingest.importing.import_traces`, answer an `ExportTraceServiceResponse`:
`{}` (or an empty protobuf message), with `partialSuccess.errorMessage` as a warning when spans were
skipped. A body that cannot be decoded, one past the JSON limits (depth, number size, NaN/Infinity, also
in JSON held by attribute values), or a malformed span, answers 400 with a `google.rpc.Status`-shaped
JSON body (`{"code": 3, "message"}`); a body over the server's limits (on the wire, or once inflated) 413
(`{"code": 8, "message"}`), see `bodies.py`. Inflating and decoding run in a worker thread. The
bearer-token middleware covers this route like the others.
"""

import json
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from experiment_runner import jsonlimits
from experiment_runner.conversation import JSONObject
from experiment_runner.errors import BadInputError
from experiment_runner.ingest.importing import ImportResult, import_traces
from experiment_runner.ingest.otlp_protobuf import decode_request
from experiment_runner.server.bodies import BodyLimits, BodyTooLarge, UndecodableBody, inflate, too_large_response
from experiment_runner.store import Store

PROTOBUF = "application/x-protobuf"
INVALID_ARGUMENT = 3  # google.rpc.Code

router = APIRouter()


def decode_protobuf(body: bytes) -> JSONObject:
    """A binary `ExportTraceServiceRequest` as its protobuf JSON mapping (ids base64, which `import` accepts)."""
    try:
        return decode_request(body)
    except ValueError as exc:
        raise UndecodableBody(f"body: {exc}" if isinstance(exc, jsonlimits.JSONLimitError) else str(exc)) from None


def decode_json(body: bytes) -> Any:
    """An OTLP/JSON body, within the JSON limits."""
    try:
        return jsonlimits.loads(body)
    except jsonlimits.JSONLimitError as exc:
        raise UndecodableBody(f"body:{exc.lineno or 1}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UndecodableBody(f"invalid JSON ({exc})") from None


def decode_body(raw: bytes, encoding: str, protobuf: bool, limits: BodyLimits) -> Any:
    """The request inflated (within `limits.max_inflated`) and decoded; blocking, so run in a thread."""
    body = inflate(raw, encoding, limits.max_inflated)
    return decode_protobuf(body) if protobuf else decode_json(body)


def _status(message: str, code: int = 400) -> JSONResponse:
    return JSONResponse({"code": INVALID_ARGUMENT, "message": message}, status_code=code)


def _warning(result: ImportResult) -> str:
    if not result.skipped_spans:
        return ""
    return f"{result.skipped_spans} of {result.spans} span(s) skipped: not inference spans; {len(result.ids)} conversation(s), {result.new} new"


def _answer(result: ImportResult, protobuf: bool) -> Response:
    """An `ExportTraceServiceResponse` in the request's encoding; skipped spans as a partial-success warning."""
    warning = _warning(result)
    if not protobuf:
        return JSONResponse({"partialSuccess": {"errorMessage": warning}} if warning else {})
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTracePartialSuccess, ExportTraceServiceResponse

    message = ExportTraceServiceResponse(partial_success=ExportTracePartialSuccess(error_message=warning)) if warning else ExportTraceServiceResponse()
    return Response(message.SerializeToString(), media_type=PROTOBUF)


REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object", "description": "OTLP/JSON ExportTraceServiceRequest", "required": ["resourceSpans"]}},
        PROTOBUF: {"schema": {"type": "string", "format": "binary", "description": "protobuf ExportTraceServiceRequest"}},
    },
}


@router.post("/v1/traces", tags=["traces"], summary="Export Traces (OTLP/HTTP)", openapi_extra={"requestBody": REQUEST_BODY})
async def export_traces(request: Request) -> Response:
    """OTLP/HTTP trace export, `application/json` or `application/x-protobuf`: inference spans become conversations."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/json", PROTOBUF):
        return _status(f"unsupported Content-Type {content_type!r}: send application/json or {PROTOBUF}", 415)
    protobuf = content_type == PROTOBUF
    encoding = request.headers.get("content-encoding", "").strip().lower()
    try:
        raw = await request.body()
        decoded = await anyio.to_thread.run_sync(decode_body, raw, encoding, protobuf, request.app.state.body_limits)
    except BodyTooLarge as exc:
        return too_large_response(exc, collector=True)
    except UndecodableBody as exc:
        return _status(str(exc))
    store: Store = request.app.state.store
    try:
        result = await anyio.to_thread.run_sync(import_traces, store, decoded, "body")
    except BadInputError as exc:
        return _status(str(exc))
    return _answer(result, protobuf)
