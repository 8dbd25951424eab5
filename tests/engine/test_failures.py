"""Which model-call failures are retried, which are permanent, which stop the run (issue 13)."""

import socket

import litellm
import pytest

from experiment_runner.engine.failures import classify, endpoint_name, endpoint_unreachable
from experiment_runner.engine.llm import RetryPolicy
from experiment_runner.fixtures.fakellm import LLAMA_CPP_PYTHON_REJECTION


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def error(cls: type, message: str) -> Exception:
    return cls(message=message, llm_provider="openai", model="m")


def test_a_validation_body_is_permanent_whatever_its_status_and_marks_a_format_rejection() -> None:
    failure = classify(error(litellm.InternalServerError, LLAMA_CPP_PYTHON_REJECTION))
    assert not failure.retryable and not failure.systematic and failure.format_rejected
    assert str(failure).startswith("HTTP 500: 1 validation error")


@pytest.mark.parametrize(
    "cls, message",
    [
        (litellm.RateLimitError, "slow down"),
        (litellm.InternalServerError, "upstream crashed"),
        (litellm.ServiceUnavailableError, "overloaded"),
    ],
)
def test_rate_limits_and_plain_5xx_are_retried(cls: type, message: str) -> None:
    failure = classify(error(cls, message))
    assert failure.retryable and not failure.systematic


def test_a_timeout_is_retried() -> None:
    assert classify(litellm.Timeout(message="timed out", model="m", llm_provider="openai")).retryable


@pytest.mark.parametrize(
    "cls, message",
    [
        (litellm.AuthenticationError, "Incorrect API key provided"),
        (litellm.InternalServerError, "Missing credentials. Please pass an `api_key`"),
        (litellm.NotFoundError, "The model `gpt-9` does not exist"),
    ],
)
def test_credentials_and_missing_models_stop_the_run(cls: type, message: str) -> None:
    failure = classify(error(cls, message))
    assert failure.systematic and not failure.retryable


def test_bad_requests_and_unknown_providers_are_permanent_but_do_not_stop_the_run() -> None:
    for failure in (
        classify(error(litellm.BadRequestError, "messages: too many images")),
        classify(error(litellm.BadRequestError, "LLM Provider NOT provided. Learn more: https://docs.litellm.ai/docs/providers")),
        classify(error(litellm.ContextWindowExceededError, "maximum context length is 4096 tokens")),
    ):
        assert not failure.retryable and not failure.systematic
    assert "https://" not in str(classify(error(litellm.BadRequestError, "LLM Provider NOT provided. Learn more: https://x.y/z")))


def test_a_connection_error_to_a_closed_port_is_systematic_and_names_the_endpoint() -> None:
    port = closed_port()
    failure = classify(error(litellm.InternalServerError, "Connection error."), f"http://127.0.0.1:{port}/v1")
    assert failure.systematic and f"127.0.0.1:{port}" in str(failure) and "connection refused" in str(failure)


def test_a_connection_error_to_a_live_endpoint_is_retried(fake_llm) -> None:
    failure = classify(error(litellm.InternalServerError, "Connection error."), fake_llm.api_base)
    assert failure.retryable and not failure.systematic


def test_endpoint_checks() -> None:
    assert endpoint_unreachable(None) is None
    assert "does not resolve" in (endpoint_unreachable("http://no-such-host.invalid:8000/v1") or "")
    assert endpoint_name("http://127.0.0.1:8081/v1", "openai/x") == "127.0.0.1:8081"
    assert endpoint_name(None, "anthropic/claude") == "anthropic"


def test_retry_delay_honours_retry_after_and_stays_within_the_backoff_cap() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=1.0, max_delay=8.0, timeout=1)
    assert policy.delay(1, 3.0) == 3.0
    assert policy.delay(1, 1000.0) == 32.0  # a huge Retry-After is capped at 4x the backoff cap
    for attempt in range(1, 8):
        assert 0 <= policy.delay(attempt, None) <= min(8.0, 2 ** (attempt - 1))
