"""OTLP protobuf: a binary `ExportTraceServiceRequest` as its protobuf JSON mapping, for `import x.pb` and
`POST /v1/traces` alike. `opentelemetry-proto` (and `google.protobuf`) are imported only here, lazily.

A file holds either one request (what an OTLP/HTTP exporter POSTs, saved as is) or a sequence of
requests each preceded by its 4-byte big-endian length (the OpenTelemetry Collector's file exporter
with `format: proto`). The decoded requests keep the JSON limits (`jsonlimits.check_value`): protobuf
nests values as deep as it likes, the JSON path does not.
"""

import logging

from experiment_runner import jsonlimits
from experiment_runner.conversation import JSONObject

log = logging.getLogger(__name__)

PROTOBUF_SUFFIXES = (".pb", ".binpb", ".protobuf")


def decode_request(body: bytes) -> JSONObject:
    """One binary `ExportTraceServiceRequest` as its protobuf JSON mapping (ids base64, which `import` accepts).

    `ValueError` when it is not one; `jsonlimits.JSONLimitError` past the JSON limits."""
    from google.protobuf.json_format import MessageToDict
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        request = ExportTraceServiceRequest.FromString(body)
    except DecodeError as exc:
        raise ValueError(f"not a protobuf ExportTraceServiceRequest ({exc})") from None
    decoded: JSONObject = MessageToDict(request)
    decoded.setdefault("resourceSpans", [])
    jsonlimits.check_value(decoded)
    return decoded


def decode_file(data: bytes) -> list[JSONObject]:
    """The requests of a protobuf trace file: one request, else length-prefixed ones; `ValueError` otherwise."""
    try:
        return [decode_request(data)]
    except jsonlimits.JSONLimitError:
        raise
    except ValueError as whole:
        framed = _framed(data)
        if framed is None:
            raise whole from None
        return [decode_request(chunk) for chunk in framed]


def _framed(data: bytes) -> list[bytes] | None:
    """The messages of a length-prefixed sequence, or None when `data` is not one."""
    chunks, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            return None
        size = int.from_bytes(data[offset : offset + 4], "big")
        offset += 4
        if size > len(data) - offset:
            return None
        chunks.append(data[offset : offset + size])
        offset += size
    return chunks or None
