"""Every model call goes through here: litellm, imported lazily, with our own retries and backoff.

litellm's own retries are off (`num_retries=0`) so each attempt is counted and a timeout is a real
per-attempt limit. What is retried (408, 409, 429, 5xx without a validation body, timeouts, dropped
connections, with exponential backoff and full jitter, honouring `Retry-After`) and what is not is
decided in `failures.classify`. A concurrency limiter is held only during an attempt, never while
backing off. `check_model` is the preflight: the model string and its credentials, before anything
is stored. Calls follow no HTTP redirect (`no_redirect_clients`): a redirect would carry the request, and
its API key, to a URL nobody checked against the server's allowlist.
"""

import asyncio
import gc
import logging
import os
import random
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from experiment_runner import jsonlimits
from experiment_runner.conversation import Generation, JSONObject, OpenAIMessage, Part, finish_reason
from experiment_runner.engine.failures import Reachability, classify
from experiment_runner.errors import BadInputError, Field, ModelCallError

if TYPE_CHECKING:
    from experiment_runner.engine.cache import ResponseCache

log = logging.getLogger(__name__)


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts per call, backoff base and cap (seconds), per-attempt timeout (seconds).

    Defaults come from EXPERIMENT_RUNNER_MAX_ATTEMPTS, _RETRY_BASE_DELAY, _RETRY_MAX_DELAY and _TIMEOUT.
    """

    max_attempts: int = field(default_factory=lambda: int(_env_float("EXPERIMENT_RUNNER_MAX_ATTEMPTS", 6)))
    base_delay: float = field(default_factory=lambda: _env_float("EXPERIMENT_RUNNER_RETRY_BASE_DELAY", 1.0))
    max_delay: float = field(default_factory=lambda: _env_float("EXPERIMENT_RUNNER_RETRY_MAX_DELAY", 30.0))
    timeout: float = field(default_factory=lambda: _env_float("EXPERIMENT_RUNNER_TIMEOUT", 120.0))
    on_retry: Callable[[str], None] | None = field(default=None, compare=False)  # told each retry's reason (a run counts them)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt `attempt + 1`: Retry-After when given, else jittered exponential."""
        if retry_after is not None and retry_after > 0:
            return min(retry_after, self.max_delay * 4)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class Completion:
    """A model reply as native message parts, with its generation metadata and how many attempts it took."""

    parts: list[Part]
    generation: Generation
    attempts: int  # 0 when the response cache answered
    duration_ms: float  # the successful attempt only (a cache hit: the original call's)
    cache_key: str | None = None  # set when a response cache saw the call (`engine.cache`)

    @property
    def text(self) -> str:
        return "".join(p["content"] for p in self.parts if p["type"] == "text")


_litellm: Any = None


@contextmanager
def _loading() -> Iterator[None]:
    """Pause the collector while modules load, then freeze what they made.

    litellm's import makes ~1 million lasting objects: full collections on the way cost ~20% of it. Frozen,
    later collections (and a forked worker's memory pages) leave them alone."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        gc.freeze()


def litellm_module() -> Any:
    """Import litellm on first use (it takes seconds) and make it quiet and offline-safe."""
    global _litellm
    if _litellm is None:
        with _loading():
            import litellm
            import openai.resources  # noqa: F401  (else the first call imports it, ~0.3 s inside a timed call)

        import experiment_runner  # noqa: F401  (the offline environment variables, before import)

        litellm.suppress_debug_info = True  # else it prints help text on stdout on errors
        litellm.aclient_session = _no_redirect_session()  # the OpenAI SDK route follows no redirect
        litellm.telemetry = False
        logger = logging.getLogger("LiteLLM")
        logger.setLevel(logging.ERROR)
        logger.propagate = False
        _litellm = litellm
    return _litellm


def warm_call_path(api_base: str = "http://127.0.0.1:9/v1") -> None:
    """Load what litellm imports on its first call (~0.1 s: its proxy types, among others) by one offline call,
    litellm's documented `mock_response`, which sends nothing (and `api_base`, a closed local port, is where it
    would go if it did). Worker processes are forked after this, so none pays for it in its first call. Outside an
    event loop only; a failure here is the first real call's to report."""
    litellm = litellm_module()
    with _loading():
        try:
            asyncio.run(litellm.acompletion(model="openai/warm-up", messages=[{"role": "user", "content": "."}], api_base=api_base,
                                            mock_response=".", api_key="sk-none", num_retries=0, timeout=5))
        except Exception as exc:  # noqa: BLE001  (nothing depends on it)
            log.debug("warming litellm's call path failed: %s", exc)


def credentials(model: str, api_base: str | None) -> dict[str, str]:
    """api_base/api_key arguments. A local OpenAI-compatible server usually needs no key, but the
    OpenAI client insists on one, so a placeholder is sent when none is configured."""
    kwargs: dict[str, str] = {}
    if api_base:
        kwargs["api_base"] = api_base
    key = os.environ.get("EXPERIMENT_RUNNER_API_KEY")
    if key:
        kwargs["api_key"] = key
    elif api_base and model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
        kwargs["api_key"] = "sk-no-key-needed"
    return kwargs


LOCAL_PROVIDERS = frozenset({"ollama", "ollama_chat", "lm_studio", "hosted_vllm", "llamafile", "vllm", "xinference"})


def check_model(model: str, api_base: str | None, field: str) -> None:
    """Preflight: litellm knows the model's provider, and its API key is set unless an endpoint is given.

    `field` is the input that named the model (`model`, `evaluator_model`); its API base is the field
    with `api_base` for `model`. Raises `BadInputError` about that field, naming the model and the
    missing variable."""
    litellm = litellm_module()
    base_field = Field(field.replace("model", "api_base"))
    try:
        _, provider, _, _ = litellm.get_llm_provider(model)
    except Exception:  # noqa: BLE001  (litellm raises BadRequestError with a long help text)
        raise BadInputError(
            [Field(field), f" {model!r}: litellm knows no provider for it; use provider/model, e.g. openai/gpt-4o-mini, "
             "ollama/llama3, or openai/<name> with ", base_field, " for an OpenAI-compatible server"],
            field=field,
        ) from None
    if api_base or os.environ.get("EXPERIMENT_RUNNER_API_KEY") or provider in LOCAL_PROVIDERS:
        return
    try:
        missing = litellm.validate_environment(model).get("missing_keys") or []
    except Exception:  # noqa: BLE001  (an exotic provider litellm cannot check: let the call tell)
        return
    keys = [k for k in missing if k.endswith(("_KEY", "_TOKEN", "_SECRET"))]
    if keys:
        raise BadInputError(
            [Field(field), f" {model!r}: {' / '.join(keys)} is not set (or give ", base_field, " for a local server)"], field=field
        )


# Providers whose litellm handler takes its own httpx-based `AsyncHTTPHandler` as `client=`; the others
# (openai/ and the OpenAI-compatible ones) go through the OpenAI SDK, built on `litellm.aclient_session`.
# tests/engine/test_redirects.py checks both routes, so a litellm that moves a provider fails a test.
HTTP_HANDLER_PROVIDERS = frozenset({"ollama", "ollama_chat", "hosted_vllm", "anthropic", "gemini", "mistral", "groq", "deepseek"})
_handlers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]" = weakref.WeakKeyDictionary()
_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]" = weakref.WeakKeyDictionary()


def _no_redirect_session() -> Any:
    """An `httpx.AsyncClient` for `litellm.aclient_session` that follows no redirect, on any event loop.

    litellm and the OpenAI SDK keep clients across calls, and a connection pool belongs to the loop that
    opened it, so `send` goes through one inner pool per running loop. The pool's transport is the one litellm
    gives its own clients (aiohttp, which follows no redirect either): httpx's own pool spent about half a
    run's CPU matching queued requests to connections at K=50 (benchmarks/README.md)."""
    import httpx
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

    class NoRedirectClient(httpx.AsyncClient):
        async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
            pool = _pools.get(asyncio.get_running_loop())
            if pool is None:
                limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)  # the httpx fallback's
                transport = AsyncHTTPHandler.create_async_transport()
                pool = _pools[asyncio.get_running_loop()] = httpx.AsyncClient(follow_redirects=False, limits=limits, transport=transport)
            return await pool.send(request, **{**kwargs, "follow_redirects": False})

    return NoRedirectClient(follow_redirects=False)


def no_redirect_clients(litellm: Any, model: str) -> dict[str, object]:
    """The `acompletion` kwargs that make this call follow no redirect (litellm's clients follow them).

    The OpenAI SDK route uses litellm's documented `aclient_session`, set once (`litellm_module`); the
    other providers get a `client=` of litellm's own handler type, one per event loop."""
    try:
        provider = litellm.get_llm_provider(model)[1]
    except Exception:  # noqa: BLE001  (the preflight reports unknown models; the call will say it again)
        return {}
    if provider not in HTTP_HANDLER_PROVIDERS:
        return {}
    loop = asyncio.get_running_loop()
    if loop not in _handlers:
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

        _handlers[loop] = AsyncHTTPHandler(follow_redirects=False)
    return {"client": _handlers[loop]}


async def close_clients() -> None:
    """Close this event loop's connections (before the loop ends, so none is left open)."""
    loop = asyncio.get_running_loop()
    for client in (_handlers.pop(loop, None), _pools.pop(loop, None)):
        if client is not None:
            await client.aclose() if hasattr(client, "aclose") else await client.close()


async def complete(
    model: str,
    messages: list[OpenAIMessage],
    *,
    api_base: str | None = None,
    policy: RetryPolicy | None = None,
    limiter: AbstractAsyncContextManager[Any] | None = None,
    reachability: Reachability | None = None,
    cache: "ResponseCache | None" = None,
    **kwargs: Any,
) -> Completion:
    """One chat completion with retries; raises `ModelCallError` when it fails for good.

    `reachability` (one per endpoint and run) stops the call, systematically, once the run's first wave
    of calls to the endpoint all went unanswered. With a `cache`, a request answered before is answered
    from it (no call, so it neither waits on the endpoint nor counts for its reachability), and a fresh
    reply is kept."""
    key = cache.key(model, api_base, messages, kwargs) if cache is not None else None
    if cache is not None and key is not None and (hit := await cache.lookup(key, model)) is not None:
        return hit
    litellm = litellm_module()
    policy = policy or RetryPolicy()
    watch = reachability or Reachability()
    call_kwargs = {**credentials(model, api_base), **no_redirect_clients(litellm, model), **kwargs, "num_retries": 0, "timeout": policy.timeout}
    attempt = token = 0
    while True:
        attempt += 1
        if watch.verdict is not None:  # every call of the endpoint's first wave went unanswered
            raise ModelCallError(str(watch.verdict), systematic=True)
        try:
            async with limiter or nullcontext():
                token = token or watch.sent()
                started = time.perf_counter()
                response = await litellm.acompletion(model=model, messages=messages, **call_kwargs)
            duration_ms = (time.perf_counter() - started) * 1000
            watch.answer()
            completion = _to_completion(model, response, attempt, duration_ms)
            return cache.remember(key, completion, model, api_base) if cache is not None and key is not None else completion
        except Exception as exc:  # noqa: BLE001  (litellm raises many types; classified below)
            failure = classify(exc, api_base)
            failure = watch.judge(token, exc, failure, api_base) or failure
            if not failure.retryable or attempt >= policy.max_attempts:
                suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                raise ModelCallError(
                    f"{failure}{suffix}", retryable=failure.retryable, systematic=failure.systematic, format_rejected=failure.format_rejected
                ) from None
            wait = policy.delay(attempt, failure.retry_after)
            log.info("%s: %s; retry %d of %d in %.1f s", model, failure, attempt, policy.max_attempts - 1, wait)
            if policy.on_retry is not None:
                policy.on_retry(str(failure))
            await anyio.sleep(wait)


def completion_from_body(model: str, body: JSONObject) -> Completion:
    """A chat-completion JSON body (a batch job's answer) as a `Completion`, read the way a live reply is."""
    return _to_completion(model, litellm_module().ModelResponse(**body), 1, 0.0)


def _to_completion(model: str, response: Any, attempts: int, duration_ms: float) -> Completion:
    choice = response.choices[0]
    message = choice.message
    parts: list[Part] = []
    reasoning = getattr(message, "reasoning_content", None)
    if reasoning:
        parts.append({"type": "reasoning", "content": reasoning})
    calls = getattr(message, "tool_calls", None) or []
    if message.content or not calls:
        parts.append({"type": "text", "content": message.content or ""})
    for call in calls:
        raw = call.function.arguments or "{}"
        try:
            arguments = jsonlimits.loads(raw) if isinstance(raw, str) else raw
        except ValueError:  # not JSON, or past the JSON limits
            arguments = None
        if not isinstance(arguments, dict):
            arguments = {"_unparsed_arguments": raw}  # the model sent arguments that are not a JSON object
        parts.append({"type": "tool_call", "id": call.id, "name": call.function.name, "arguments": arguments})
    usage = getattr(response, "usage", None)
    hidden = getattr(response, "_hidden_params", {}) or {}
    cost = hidden.get("response_cost")
    reason = choice.finish_reason
    generation: Generation = {
        "model": model,
        "provider": hidden.get("custom_llm_provider"),
        "input_tokens": getattr(usage, "prompt_tokens", None),
        "output_tokens": getattr(usage, "completion_tokens", None),
        "cost_usd": float(cost) if isinstance(cost, int | float) else None,
        "latency_ms": round(duration_ms, 3),
        "finish_reasons": [finish_reason(reason)] if reason else [],
    }
    return Completion(parts, generation, attempts, duration_ms)
