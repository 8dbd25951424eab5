"""Unreachable is systematic, missing credentials are no HTTP 500, resume preflights (issue 20 items 4 and 5).

Offline throughout: hosts under `.invalid` never resolve, a closed port on 127.0.0.1 refuses, and a local
TCP server that accepts connections and never answers stands for a provider that times out.
"""

import socket
import threading
from collections.abc import Iterator

import anyio
import litellm
import pytest
from conftest import FIXTURES, dump
from conftest import query as rows

from experiment_runner.engine.failures import Reachability, classify
from experiment_runner.engine.llm import RetryPolicy, complete
from experiment_runner.errors import ModelCallError

TOOLS = FIXTURES / "handwritten.native.jsonl"


class SilentServer:
    """Accepts TCP connections and never answers; counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def pending_only(db_path, experiment_id: str) -> bool:
    return rows(db_path, "SELECT status, count(*) FROM item WHERE experiment_id = ? GROUP BY status", experiment_id) == [("pending", 4)]


def test_a_provider_host_that_does_not_resolve_stops_the_run_naming_the_host(run_cli, db_path, monkeypatch) -> None:
    """The issue's case: `--model openai/gpt-4o-mini`, a key set, no network (here: the base URL's host never resolves)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://nonexistent.invalid:9/v1")
    run_cli("import", TOOLS)
    result = run_cli("run", "--name", "x", "--all", "--model", "openai/gpt-4o-mini")
    assert result.exit_code == 1
    experiment_id = result.stdout.strip().splitlines()[-1]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        "Error: stopped: target model openai/gpt-4o-mini: cannot reach nonexistent.invalid:9: the host name does not resolve; "
        "the items not run stay pending"
    ), error
    assert "attempts" not in error  # not retried
    assert pending_only(db_path, experiment_id)


def test_an_api_base_that_does_not_resolve_stops_the_run(run_cli, db_path) -> None:
    run_cli("import", TOOLS)
    result = run_cli("run", "--name", "x", "--all", "--model", "openai/t", "--api-base", "http://nonexistent.invalid:9/v1")
    assert result.exit_code == 1 and "cannot reach nonexistent.invalid:9: the host name does not resolve" in result.stderr
    assert pending_only(db_path, result.stdout.strip().splitlines()[-1])


def test_a_first_wave_that_times_out_everywhere_stops_the_run(run_cli, db_path, silent, monkeypatch) -> None:
    monkeypatch.setenv("EXPERIMENT_RUNNER_TIMEOUT", "1")
    run_cli("import", TOOLS)
    api_base = f"http://127.0.0.1:{silent.port}/v1"
    result = run_cli("run", "--name", "x", "--all", "--model", "openai/t", "--api-base", api_base, "--concurrency", "3")
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(
        f"Error: stopped: target model openai/t: cannot reach 127.0.0.1:{silent.port}: none of the first 3 calls got an answer "
        f"(last: timed out at 127.0.0.1:{silent.port}: "
    ), error
    assert len(silent.accepted) <= 6  # the first wave, and at most one retry of each call under way
    assert pending_only(db_path, result.stdout.strip().splitlines()[-1])


def _raised_timeout(port: int) -> Exception:
    """A real timeout from litellm: a call to a server that never answers."""
    async def call() -> Exception:
        try:
            await litellm.acompletion(model="openai/t", messages=[{"role": "user", "content": "hi"}], api_base=f"http://127.0.0.1:{port}/v1",
                                      api_key="x", num_retries=0, timeout=0.2)
        except Exception as exc:  # noqa: BLE001
            return exc
        raise AssertionError("the silent server answered")

    return anyio.run(call)


def test_reachability_trips_only_when_the_whole_first_wave_went_unanswered(silent) -> None:
    exc = _raised_timeout(silent.port)
    failure = classify(exc)
    assert failure.retryable and not failure.systematic and failure.args[0].startswith(f"timed out at 127.0.0.1:{silent.port}")
    watch = Reachability()
    first, second = watch.sent(), watch.sent()
    assert watch.judge(first, exc, failure, None) is None  # one of two has failed
    later = watch.sent()  # sent after the first failure: not in the first wave
    verdict = watch.judge(second, exc, failure, None)
    assert verdict is not None and verdict.systematic and str(verdict).startswith(f"cannot reach 127.0.0.1:{silent.port}: none of the first 2 calls")
    assert watch.judge(later, exc, failure, None) is verdict
    answered = Reachability()
    a, b = answered.sent(), answered.sent()
    answered.judge(a, exc, failure, None)
    answered.answer()  # any answer, even an HTTP error, means the endpoint is there
    assert answered.judge(b, exc, failure, None) is None


def test_missing_credentials_are_not_an_http_500(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    async def call() -> None:
        await complete("openai/gpt-4o-mini", [{"role": "user", "content": "hi"}], policy=RetryPolicy(max_attempts=3, timeout=5))

    with pytest.raises(ModelCallError) as raised:
        anyio.run(call)
    assert str(raised.value) == "missing credentials: OPENAI_API_KEY is not set"
    assert raised.value.systematic and not raised.value.retryable


def test_resume_runs_the_preflight_of_run(run_cli, db_path, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://nonexistent.invalid:9/v1")
    run_cli("import", TOOLS)
    experiment_id = run_cli("run", "--name", "x", "--all", "--model", "openai/gpt-4o-mini").stdout.strip().splitlines()[-1]
    monkeypatch.delenv("OPENAI_API_KEY")
    before = dump(db_path)
    result = run_cli("resume", experiment_id, "--retry-failed")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: the experiment's stored model 'openai/gpt-4o-mini': OPENAI_API_KEY is not set "
        f"(or give `experiment-runner resume {experiment_id} --api-base URL` for a local server)\n"
    )
    assert dump(db_path) == before
