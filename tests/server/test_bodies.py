"""Bounded request bodies: limits on the wire and once inflated, 413 answers, and a gzip bomb against a real server."""

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import FIXTURES
from factories import wait_until_serving
from fastapi.testclient import TestClient

from experiment_runner.server.app import create_app
from experiment_runner.server.bodies import MIB, BodyLimits, BodyTooLarge, UndecodableBody, inflate


def otlp_request() -> bytes:
    """A small valid OTLP/JSON request: the first line of the fixtures' OTLP JSONL file."""
    return (FIXTURES / "openai-v2.otlp.jsonl").read_text(encoding="utf-8").splitlines()[0].encode()


def gzip_bomb(inflated_mb: int) -> bytes:
    """`inflated_mb` MiB of zeros, gzipped (about 1 KiB on the wire per MiB inflated), built in steps."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MIB)
    return b"".join(compressor.compress(block) for _ in range(inflated_mb)) + compressor.flush()


# --- inflate ------------------------------------------------------------------------------------------


def test_inflate_reads_gzip_with_several_members_and_zlib_deflate() -> None:
    assert inflate(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 100) == b"abcd"
    assert inflate(zlib.compress(b"hello" * 100), "deflate", 1000) == b"hello" * 100
    assert inflate(b"plain", "identity", 1) == b"plain"  # not inflated: the wire limit covers it


def test_inflate_stops_at_the_limit_instead_of_inflating_a_bomb() -> None:
    bomb = gzip_bomb(256)  # 256 MiB inflated; the limit is 1 MiB, so only about that is ever held
    assert len(bomb) < 1 * MIB
    with pytest.raises(BodyTooLarge) as refused:
        inflate(bomb, "gzip", MIB)
    assert refused.value.status_code == 413 and "--max-inflated-mb" in refused.value.message
    assert len(inflate(gzip_bomb(1), "gzip", MIB)) == MIB  # exactly at the limit is fine


@pytest.mark.parametrize(
    ("body", "encoding", "needle"),
    [(gzip.compress(b"x" * 1000)[:-12], "gzip", "ends before"), (b"not gzip", "gzip", "not valid gzip"), (b"x", "br", "unsupported Content-Encoding")],
)
def test_inflate_refuses_what_is_not_what_it_claims(body: bytes, encoding: str, needle: str) -> None:
    with pytest.raises(UndecodableBody, match=needle):
        inflate(body, encoding, MIB)


# --- the app's answers --------------------------------------------------------------------------------


@pytest.fixture
def small(store) -> Iterator[TestClient]:
    """An app with a 1 MiB wire limit and a 2 MiB inflated limit."""
    with TestClient(create_app(store, limits=BodyLimits(max_body=MIB, max_inflated=2 * MIB))) as client:
        yield client


def test_a_body_over_the_wire_limit_is_413_on_every_route(small) -> None:
    big = b"[" + b" " * (MIB + 10) + b"]"
    for path in ("/v1/conversations", "/v1/experiments"):
        response = small.post(path, content=big, headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert "over the server's limit of 1 MiB" in response.json()["detail"]
    traces = small.post("/v1/traces", content=big, headers={"Content-Type": "application/json"})
    assert traces.status_code == 413 and traces.json()["code"] == 8 and "1 MiB" in traces.json()["message"]


def test_a_chunked_body_without_length_is_stopped_at_the_limit(small) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(40):
            yield b" " * 65536  # 2.5 MiB in all, never announced
        yield b"]"

    for path, key in (("/v1/conversations", "detail"), ("/v1/traces", "message")):
        response = small.post(path, content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413, response.text
        assert "limit of 1 MiB" in response.json()[key]


def test_a_gzip_bomb_on_traces_is_413_as_a_collector_answers(small, db_path) -> None:
    response = small.post("/v1/traces", content=gzip_bomb(64), headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert response.json() == {"code": 8, "message": "request body inflates to more than the server's limit of 2 MiB (serve --max-inflated-mb)"}
    ok = small.post("/v1/traces", content=gzip.compress(otlp_request()), headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert ok.status_code == 200, ok.text


def test_serve_takes_the_limits_from_options_and_environment(run_cli) -> None:
    help_text = run_cli("serve", "--help").output
    assert "--max-body-mb" in help_text and "--max-inflated-mb" in help_text
    assert "EXPERIMENT_RUNNER_MAX_BODY_MB" in help_text and "EXPERIMENT_RUNNER_MAX_INFLATED_MB" in help_text
    refused = run_cli("serve", "--max-body-mb", "0")
    assert refused.exit_code == 2 and "--max-body-mb" in refused.output


# --- a real server --------------------------------------------------------------------------------------


def vm_hwm_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM), so a short spike cannot be missed between samples."""
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    assert match
    return int(match[1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_real_server_refuses_a_1_gib_bomb_within_its_memory_and_a_big_post_unread(tmp_path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "experiment_runner", "--db", str(tmp_path / "s.db"), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={k: v for k, v in os.environ.items() if k != "EXPERIMENT_RUNNER_TOKEN"},
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            wait_until_serving(server, f"http://127.0.0.1:{port}/v1/experiments", timeout=30)
            before = vm_hwm_kb(server.pid)
            bomb = http.post("/v1/traces", content=gzip_bomb(1024), headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
            assert bomb.status_code == 413 and bomb.json()["code"] == 8
            assert http.get("/v1/experiments").status_code == 200
            rise_mb = (vm_hwm_kb(server.pid) - before) / 1024
            assert rise_mb < 100, f"peak memory rose by {rise_mb:.0f} MB for a 1 GiB bomb"
            # 221 MB announced: refused from its headers, before a byte of the body is read
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
                raw.sendall(b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 221000000\r\n\r\n[")
                answer = b"".join(iter(lambda: raw.recv(65536), b"")).decode()  # the server closes the connection
            assert answer.startswith("HTTP/1.1 413") and "limit of 32 MiB" in answer
            assert json.loads(answer.split("\r\n\r\n", 1)[1])["detail"].startswith("request body over")
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=15)
    assert "Traceback" not in stderr
