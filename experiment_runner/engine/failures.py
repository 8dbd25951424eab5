"""What a failed model call means: retry it, give up on the item, or stop the whole run.

litellm raises many exception types, and the same fault arrives differently from different servers
(llama-cpp-python answers a request-validation error with HTTP 500; litellm reports "Missing
credentials" and a refused connection as 500 too). So the decision reads the status, the message and
the exceptions underneath litellm's (the openai/httpx error names the URL really called, the socket
error says whether the name did not resolve or the connection was refused):

- permanent, not retried: request-validation errors whatever their status, 400/401/403/404/422,
  missing credentials, an unknown provider, a context window exceeded, unsupported parameters;
- retried with backoff: 408, 409, 429, other 5xx, timeouts, dropped connections;
- systematic (permanent, and the run stops): the endpoint's host does not resolve or refuses the
  connection, 401/403 or missing credentials, the model does not exist; and (`Reachability`) every
  call of the run's first wave to one endpoint ended without an answer (timed out, dropped); the endpoint answers with a
  redirect (model calls follow none, see `llm.py`: the error names where it pointed).

`format_rejected` marks a permanent error whose message is about `response_format`, which the
structured-output fallback answers with the next mode.
"""

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from experiment_runner.errors import ModelCallError

_VALIDATION = re.compile(
    r"validation error|literal_error|Input should be|unprocessable entity|extra_forbidden|invalid_request_error", re.I
)
_FORMAT = re.compile(r"response_format|json_schema|json_object|grammar|\bschema\b", re.I)
_CREDENTIALS = re.compile(r"missing credentials|api[_ ]?key|unauthori[sz]ed|invalid.{0,20}(key|token)|authentication", re.I)
_NO_MODEL = re.compile(r"model.{0,80}(not found|does not exist|not exist|unknown|no such)|(unknown|no such) model", re.I)
_PERMANENT_NAMES = ("ContextWindowExceeded", "UnsupportedParams", "BadRequest", "Authentication", "PermissionDenied", "NotFound")
_MISSING_KEY = re.compile(r"missing credentials|missing .{0,40}api key|no .{0,20}api[_ ]?key (is )?set", re.I)
_KEY_VARIABLE = re.compile(r"\b([A-Z][A-Z0-9_]*_(?:API_KEY|KEY|TOKEN))\b")
_NO_ANSWER_NAMES = ("APIConnectionError", "APITimeoutError", "ConnectError", "ConnectTimeout", "ReadTimeout", "Timeout")
_CONNECTION = re.compile(r"connection error|cannot connect|connection refused|connecterror|name or service|nodename|getaddrinfo", re.I)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line, without litellm's prefixes, at most 300 characters."""
    name = type(exc).__name__
    message = " ".join(str(exc).split())
    prefixes = ("litellm.", name + ":", "OpenAIException -")
    while message.startswith(prefixes):  # litellm repeats the class name: "litellm.X: X: OpenAIException - ..."
        prefix = next(p for p in prefixes if message.startswith(p))
        message = message[len(prefix):].strip()
    message = re.sub(r"\s*(Learn more|Give Feedback / Get Help|Provider List):? https?://\S+.*$", "", message)
    return message[:297] + "..." if len(message) > 300 else message


def classify(exc: BaseException, api_base: str | None = None) -> ModelCallError:
    """Turn a litellm/openai exception into a one-line `ModelCallError` saying what to do about it."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    message = one_line(exc)
    label = f"HTTP {status}" if isinstance(status, int) else name
    if _MISSING_KEY.search(message):  # litellm says 500 or 401, but no server was asked anything
        variable = _KEY_VARIABLE.search(message)
        return ModelCallError(f"missing credentials: {variable[1] + ' is not set' if variable else message}", systematic=True)
    redirect = redirected(exc, status)
    if redirect:
        return ModelCallError(redirect, systematic=True)
    if no_answer(exc):
        return _unanswered(exc, message, name, api_base)
    validation = bool(_VALIDATION.search(message))
    credentials = status in (401, 403) or "Authentication" in name or bool(_CREDENTIALS.search(message) and not validation)
    if credentials:
        return ModelCallError(f"{label}: {message}", systematic=True)
    if status == 404 or _NO_MODEL.search(message):
        return ModelCallError(f"{label}: {message}", systematic=bool(_NO_MODEL.search(message)) or status == 404)
    permanent = validation or status in (400, 422) or any(k in name for k in _PERMANENT_NAMES) or "LLM Provider NOT provided" in message
    if permanent:
        return ModelCallError(f"{label}: {message}", format_rejected=bool(_FORMAT.search(message)))
    retryable = status in (408, 409, 429) or (isinstance(status, int) and status >= 500) or "ServiceUnavailable" in name or "InternalServer" in name
    return ModelCallError(f"{label}: {message}", retryable=retryable, retry_after=retry_after(exc))


def _unanswered(exc: BaseException, message: str, name: str, api_base: str | None) -> ModelCallError:
    """A call that got no answer: systematic when the host does not resolve or refuses, else retried."""
    url = request_url(exc) or api_base
    where = host_port(url) if url else None
    cause = _socket_cause(exc) or (endpoint_unreachable(url) if url and _CONNECTION.search(message) else None)
    if cause and where:
        return ModelCallError(f"cannot reach {where}: {cause}", systematic=True)
    at = f" at {where}" if where else ""
    if "Timeout" in name or any("Timeout" in type(e).__name__ for e in _chain(exc)):
        return ModelCallError(f"timed out{at}: {message}", retryable=True)
    return ModelCallError(f"connection error{at}: {message}", retryable=True)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and the ones it was raised from (`__cause__`, else `__context__`), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 20:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def no_answer(exc: BaseException) -> bool:
    """Whether the call got no HTTP answer at all: no connection, a dropped one, or a timeout."""
    chain = list(_chain(exc))
    for error in chain[1:]:  # the openai error under litellm's (whose own class derives from it whatever happened)
        if type(error).__module__.startswith("openai") and any(c.__name__ == "APIStatusError" for c in type(error).__mro__):
            return False  # the server answered with an HTTP error
    if any(isinstance(error, OSError | TimeoutError) or type(error).__name__ in _NO_ANSWER_NAMES for error in chain):
        return True
    return bool(_CONNECTION.search(one_line(exc)))


def _socket_cause(exc: BaseException) -> str | None:
    """What the socket layer said, when it is final: the name does not resolve, or the connection was refused."""
    for error in _chain(exc):
        if isinstance(error, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(error, ConnectionRefusedError):
            return "connection refused (is the server running?)"
    return None


def request_url(exc: BaseException) -> str | None:
    """The URL the failed call really went to, read from the openai/httpx exception under litellm's."""
    for error in _chain(exc):
        if type(error).__module__.split(".")[0] not in ("openai", "httpx"):
            continue
        try:
            url = str(error.request.url)  # type: ignore[attr-defined]
        except (AttributeError, RuntimeError):  # httpx raises RuntimeError when no request is attached
            continue
        if urlsplit(url).hostname:
            return url
    return None


def host_port(url: str) -> str:
    """`host:port` of a URL (the scheme's port when none is written)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def endpoint_unreachable(api_base: str | None) -> str | None:
    """Why nothing can be reached at `api_base` (refused, no such host), or None when a TCP connect works.

    Some providers report every connection failure as "Connection error." with nothing underneath; one
    connect attempt tells a server that is down from a connection that merely dropped."""
    if not api_base:
        return None
    parts = urlsplit(api_base)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=3):
            return None
    except socket.gaierror:
        return "the host name does not resolve"
    except ConnectionRefusedError:
        return "connection refused (is the server running?)"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


@dataclass
class Reachability:
    """Whether one endpoint answers at all, judged on the run's first wave of calls to it.

    The first wave is the calls sent before the first of them ended. If every one of them ends without
    an answer (timed out, dropped) and no call to the endpoint has had any answer (an HTTP error is an
    answer), the endpoint is unreachable: the run stops within about one timeout instead of retrying every
    item for minutes. Once tripped, each call still under way stops at its next failure or retry."""

    wave: set[int] = field(default_factory=set)
    silent: set[int] = field(default_factory=set)
    closed: bool = False
    answered: bool = False
    verdict: ModelCallError | None = None
    sent_count: int = 0

    def sent(self) -> int:
        """A call's first attempt is being sent; returns the call's token."""
        self.sent_count += 1
        if not self.closed:
            self.wave.add(self.sent_count)
        return self.sent_count

    def answer(self) -> None:
        """A call got an answer (a reply, or an HTTP error): the endpoint is reachable."""
        self.closed = self.answered = True

    def judge(self, token: int, exc: BaseException, failure: ModelCallError, api_base: str | None) -> ModelCallError | None:
        """Record a failed attempt; returns the systematic error to raise once the whole first wave went unanswered."""
        if failure.systematic:  # already final on its own (no such host, refused, no key)
            return None
        if not no_answer(exc):
            self.answer()
            return None
        self.closed = True
        if not self.answered and token in self.wave:
            self.silent.add(token)
            if self.verdict is None and self.silent == self.wave:
                url = request_url(exc) or api_base
                count = len(self.wave)
                calls = f"none of the first {count} calls" if count > 1 else "the first call"
                self.verdict = ModelCallError(
                    f"cannot reach {host_port(url) if url else 'the endpoint'}: {calls} got an answer (last: {failure})",
                    systematic=True,
                )
        return self.verdict


def redirected(exc: BaseException, status: object) -> str | None:
    """Why a call that met a redirect failed (the answer's status and Location), or None if it met none.

    litellm reports a redirect as the 3xx itself (OpenAI SDK) or as a connection error (some providers),
    but the failed response's headers keep the Location either way."""
    location = _header(exc, "location")
    is_redirect = isinstance(status, int) and 300 <= status < 400
    if not location and not is_redirect:
        return None
    answer = f"HTTP {status} redirect" if is_redirect else "a redirect"
    where = f" to {location}" if location else ""
    return f"the endpoint answered with {answer}{where}, and model calls follow no redirect: use the final URL as the API base"


def _header(exc: BaseException, name: str) -> str | None:
    """A header of the failed response, when litellm kept them."""
    headers = getattr(exc, "litellm_response_headers", None)
    response = getattr(exc, "response", None)
    if headers is None and response is not None:
        headers = getattr(response, "headers", None)
    try:
        value = headers.get(name) if headers is not None else None
    except AttributeError:
        return None
    return str(value) if value is not None else None


def retry_after(exc: BaseException) -> float | None:
    """The Retry-After header of a failed response, in seconds, if it sent one."""
    value = _header(exc, "retry-after")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def endpoint_name(api_base: str | None, model: str) -> str:
    """How an error line names where a call went: host:port of the api_base, else the provider prefix."""
    if api_base:
        parts = urlsplit(api_base)
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    return model.split("/", 1)[0] if "/" in model else model
