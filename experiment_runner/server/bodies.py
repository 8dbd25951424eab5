"""Bounded request bodies: no request can make the server read, or inflate, more than its limits.

Two limits (`serve --max-body-mb`, `--max-inflated-mb`): the bytes on the wire of any request, and what
a gzip/deflate body of `POST /v1/traces` may inflate to. `BodyLimit`, an ASGI middleware, refuses a
body whose `Content-Length` is over the limit before reading a byte of it, and stops reading a body
(chunked, or longer than it said) the moment it passes the limit. `inflate` works in bounded steps and
gives up as soon as the output passes its limit, so a gzip bomb costs at most the limit in memory; the
route runs it in a worker thread, so the event loop goes on answering other requests meanwhile.
Over a limit the answer is 413: `{"detail": ...}`, or on the collector paths (`/v1/traces`) the
`google.rpc.Status` shape an OTLP collector answers with.
"""

import logging
import zlib
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

log = logging.getLogger("experiment_runner.server.bodies")

MIB = 1024 * 1024
DEFAULT_MAX_BODY_MB = 32
DEFAULT_MAX_INFLATED_MB = 64
INFLATE_STEP = MIB  # output bytes per decompression step
RESOURCE_EXHAUSTED = 8  # google.rpc.Code, what a collector reports for a message over its size limit


@dataclass(frozen=True)
class BodyLimits:
    """The most a request body may be on the wire, and the most a compressed one may inflate to (bytes)."""

    max_body: int = DEFAULT_MAX_BODY_MB * MIB
    max_inflated: int = DEFAULT_MAX_INFLATED_MB * MIB

    @classmethod
    def from_mb(cls, max_body_mb: float, max_inflated_mb: float) -> "BodyLimits":
        return cls(int(max_body_mb * MIB), int(max_inflated_mb * MIB))


class BodyTooLarge(HTTPException):
    """A request body over a limit: 413 (FastAPI answers it as `{"detail": ...}` wherever it is raised)."""

    def __init__(self, message: str):
        super().__init__(413, message)
        self.message = message


class UndecodableBody(ValueError):
    """The body is not valid in the Content-Encoding (or Content-Type) it claims."""


def _mb(limit: int) -> str:
    return f"{limit / MIB:g} MiB"


def body_too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body over the server's limit of {_mb(limit)} (serve --max-body-mb)")


def inflated_too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body inflates to more than the server's limit of {_mb(limit)} (serve --max-inflated-mb)")


def too_large_response(exc: BodyTooLarge, collector: bool) -> JSONResponse:
    """The 413 answer: `{"detail"}`, or a `google.rpc.Status` (`{"code", "message"}`) for an OTLP exporter."""
    content: dict[str, int | str] = {"code": RESOURCE_EXHAUSTED, "message": exc.message} if collector else {"detail": exc.message}
    return JSONResponse(content, status_code=413, headers={"Connection": "close"})


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` without its Content-Encoding (gzip, x-gzip or deflate), refused (`BodyTooLarge`) past `limit` bytes.

    Decompresses at most `INFLATE_STEP` bytes at a time, so memory stays within the limit whatever the
    ratio; gzip may hold several members, as `gzip.decompress` allows. Blocking: call it in a thread."""
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS  # HTTP's "deflate" is the zlib format
    else:
        raise UndecodableBody(f"unsupported Content-Encoding {encoding!r}: send gzip, deflate or identity")
    chunks: list[bytes] = []
    size = 0
    pending = body
    try:
        while pending:
            inflater = zlib.decompressobj(wbits)
            while not inflater.eof:
                chunk = inflater.decompress(pending, INFLATE_STEP)
                pending = inflater.unconsumed_tail
                if not chunk and not pending:
                    raise UndecodableBody(f"body is not valid {encoding} (it ends before the compressed data does)")
                size += len(chunk)
                if size > limit:
                    raise inflated_too_large(limit)
                chunks.append(chunk)
            pending = inflater.unused_data if wbits > zlib.MAX_WBITS else b""  # the next gzip member, if any
    except zlib.error as exc:
        raise UndecodableBody(f"body is not valid {encoding} ({exc})") from None
    return b"".join(chunks)


class BodyLimit:
    """ASGI middleware: every request body is at most `limits.max_body` bytes, or the answer is 413.

    A `Content-Length` over the limit is refused before the body is read (and the connection closed); a
    body that passes the limit while it is read raises `BodyTooLarge` from `receive`, which the route's
    handler turns into the 413 (FastAPI re-raises an `HTTPException` from body parsing)."""

    def __init__(self, app: Any, limits: BodyLimits, collector_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.limit = limits.max_body
        self.collector_paths = collector_paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            log.warning("refused a %d-byte body for %s: over the %s limit", declared, scope["path"], _mb(self.limit))
            await too_large_response(body_too_large(self.limit), scope["path"] in self.collector_paths)(scope, receive, send)
            return
        received = 0

        async def bounded_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise body_too_large(self.limit)
            return message

        await self.app(scope, bounded_receive, send)


def _content_length(scope: Any) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
