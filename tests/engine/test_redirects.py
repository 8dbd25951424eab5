"""Model calls follow no redirect: a loopback endpoint answering 307 cannot send a call (or its key) elsewhere."""

import http.server
import threading
from collections.abc import Iterator

import anyio
import pytest
from conftest import FIXTURES, query

from experiment_runner.engine.llm import HTTP_HANDLER_PROVIDERS, RetryPolicy, close_clients, complete
from experiment_runner.errors import ModelCallError
from experiment_runner.fixtures.fakellm import FakeLLM


class Redirector:
    """A loopback server that answers every POST with `307` to `target` (another host: `localhost`, not 127.0.0.1)."""

    def __init__(self, target: str):
        location = target

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (the stdlib's name)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(307)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api_base = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def redirector(fake_llm: FakeLLM) -> Iterator[Redirector]:
    elsewhere = fake_llm.api_base.replace("127.0.0.1", "localhost") + "/chat/completions"
    server = Redirector(elsewhere)
    yield server
    server.close()


# openai/ and the OpenAI-compatible local ones go through the OpenAI SDK; the others through litellm's handler.
PROVIDERS = ["openai", "lm_studio", "llamafile", *sorted(HTTP_HANDLER_PROVIDERS)]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_redirect_fails_the_call_for_good_and_nothing_reaches_the_other_host(provider, redirector, fake_llm, monkeypatch) -> None:
    for key in ("ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY", "DEEPSEEK_API_KEY"):
        monkeypatch.setenv(key, "sk-test")

    async def call() -> None:
        try:
            await complete(f"{provider}/fake-target", [{"role": "user", "content": "hi"}], api_base=redirector.api_base,
                           policy=RetryPolicy(max_attempts=3, base_delay=0, timeout=10))
        finally:
            await close_clients()

    with pytest.raises(ModelCallError) as failed:
        anyio.run(call)
    assert fake_llm.request_count == 0  # the redirect was not followed
    assert not failed.value.retryable and failed.value.systematic  # one attempt: a redirect is not retried
    assert "redirect to http://localhost:" in str(failed.value) and "follow no redirect" in str(failed.value)


def test_a_run_against_a_redirecting_endpoint_stops_and_names_the_redirect(run_cli, redirector, fake_llm, db_path) -> None:
    run_cli("import", str(FIXTURES / "ragtruth-sample.conversations.jsonl"))
    result = run_cli("run", "--name", "r", "--model", "openai/fake-target", "--api-base", redirector.api_base, "--all", "--concurrency", "1")
    assert result.exit_code == 1
    assert "HTTP 307 redirect to http://localhost:" in result.stderr and "model calls follow no redirect" in result.stderr
    assert fake_llm.request_count == 0
    assert query(db_path, "SELECT count(*) FROM item WHERE status = 'completed'") == [(0,)]
