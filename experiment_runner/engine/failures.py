"""What a failed model call means: retry it, give up on the item, or stop the whole run.

litellm raises many exception types, and the same fault arrives differently from different servers
(llama-cpp-python answers a request-validation error with HTTP 500; litellm reports "Missing
credentials" and a refused connection as 500 too). So the decision reads the status and the message:

- permanent, not retried: request-validation errors whatever their status, 400/401/403/404/422,
  missing credentials, an unknown provider, a context window exceeded, unsupported parameters;
- retried with backoff: 408, 409, 429, other 5xx, timeouts, dropped connections;
- systematic (permanent, and the run stops): nothing listens at the endpoint or its host does not
  resolve, 401/403 or missing credentials, the model does not exist, the endpoint answers with a
  redirect (model calls follow none, see `llm.py`: the error names where it pointed).

`format_rejected` marks a permanent error whose message is about `response_format`, which the
structured-output fallback answers with the next mode.
"""

import re
import socket
from urllib.parse import urlsplit

from experiment_runner.errors import ModelCallError

_VALIDATION = re.compile(
    r"validation error|literal_error|Input should be|unprocessable entity|extra_forbidden|invalid_request_error", re.I
)
_FORMAT = re.compile(r"response_format|json_schema|json_object|grammar|\bschema\b", re.I)
_CREDENTIALS = re.compile(r"missing credentials|api[_ ]?key|unauthori[sz]ed|invalid.{0,20}(key|token)|authentication", re.I)
_NO_MODEL = re.compile(r"model.{0,80}(not found|does not exist|not exist|unknown|no such)|(unknown|no such) model", re.I)
_PERMANENT_NAMES = ("ContextWindowExceeded", "UnsupportedParams", "BadRequest", "Authentication", "PermissionDenied", "NotFound")
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
    redirect = redirected(exc, status)
    if redirect:
        return ModelCallError(redirect, systematic=True)
    if _CONNECTION.search(message) or "APIConnectionError" in name:
        unreachable = endpoint_unreachable(api_base)
        if unreachable:
            return ModelCallError(unreachable, systematic=True)
        return ModelCallError(f"connection error: {message}", retryable=True)
    if "Timeout" in name or status == 408:
        return ModelCallError(f"{label}: {message}", retryable=True)
    validation = bool(_VALIDATION.search(message))
    credentials = status in (401, 403) or "Authentication" in name or bool(_CREDENTIALS.search(message) and not validation)
    if credentials:
        return ModelCallError(f"{label}: {message}", systematic=True)
    if status == 404 or _NO_MODEL.search(message):
        return ModelCallError(f"{label}: {message}", systematic=bool(_NO_MODEL.search(message)) or status == 404)
    permanent = validation or status in (400, 422) or any(k in name for k in _PERMANENT_NAMES) or "LLM Provider NOT provided" in message
    if permanent:
        return ModelCallError(f"{label}: {message}", format_rejected=bool(_FORMAT.search(message)))
    retryable = status in (409, 429) or (isinstance(status, int) and status >= 500) or "ServiceUnavailable" in name or "InternalServer" in name
    return ModelCallError(f"{label}: {message}", retryable=retryable, retry_after=retry_after(exc))


def endpoint_unreachable(api_base: str | None) -> str | None:
    """Why nothing can be reached at `api_base` (refused, no such host), or None when a TCP connect works.

    litellm reports every connection failure as "Connection error."; one connect attempt tells a server
    that is down from a connection that merely dropped."""
    if not api_base:
        return None
    parts = urlsplit(api_base)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=3):
            return None
    except socket.gaierror:
        return f"cannot reach {host}:{port}: the host name does not resolve"
    except ConnectionRefusedError:
        return f"cannot reach {host}:{port}: connection refused (is the server running?)"
    except OSError as exc:
        return f"cannot reach {host}:{port}: {exc.strerror or type(exc).__name__}"


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
