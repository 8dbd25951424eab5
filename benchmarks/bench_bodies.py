"""Hostile bodies against a real `experiment-runner serve` (issue 21, item 1): memory and the latency of other requests.

Starts the server as a process (default limits unless given), then:
1. a gzip bomb on `POST /v1/traces` (`--bomb-gb` GiB of zeros, a few MB on the wire), while another thread
   sends `GET /v1/experiments` back to back: the bomb's answer, the server's resident memory (sampled every
   5 ms, and its kernel-kept peak VmHWM) against the baseline, and the GETs' latencies during the bomb;
2. a 221 MB `POST /v1/conversations`, announced by Content-Length, then the same sent chunked (no length).

    python benchmarks/bench_bodies.py                 # 3 GiB bomb
    python benchmarks/bench_bodies.py --bomb-gb 1 --serve-arg=--max-inflated-mb=16
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
from _table import print_table  # benchmarks/ is on sys.path when a script here runs

MIB = 1024 * 1024


def status_kb(pid: int, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match[1]) if match else 0


def gzip_bomb(gib: float) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(16 * MIB)
    return b"".join(compressor.compress(block) for _ in range(int(gib * 1024 / 16))) + compressor.flush()


def start_server(db: Path, extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPERIMENT_RUNNER_")}
    server = subprocess.Popen([sys.executable, "-m", "experiment_runner", "--db", str(db), "serve", "--port", str(port), *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/v1/experiments").status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server did not start: {server.stderr.read() if server.stderr else ''}")
        time.sleep(0.1)


class Sampler(threading.Thread):
    """The server's VmRSS every 5 ms until stopped; keeps the peak."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, status_kb(self.pid, "VmRSS"))
            time.sleep(0.005)


def bomb_run(url: str, pid: int, bomb: bytes) -> list[tuple[str, str, str]]:
    baseline, hwm_before = status_kb(pid, "VmRSS"), status_kb(pid, "VmHWM")
    sampler = Sampler(pid)
    sampler.start()
    result: dict[str, object] = {}
    latencies: list[float] = []

    def send() -> None:
        started = time.perf_counter()
        response = httpx.post(f"{url}/v1/traces", content=bomb, timeout=300,
                              headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
        result.update(status=response.status_code, body=response.text[:90], seconds=time.perf_counter() - started)

    sender = threading.Thread(target=send)
    sender.start()
    with httpx.Client(base_url=url, timeout=60) as http:
        while sender.is_alive():
            started = time.perf_counter()
            assert http.get("/v1/experiments").status_code == 200
            latencies.append((time.perf_counter() - started) * 1000)
    sender.join()
    sampler.done.set()
    sampler.join()
    after = status_kb(pid, "VmRSS")
    hwm_rise = (status_kb(pid, "VmHWM") - hwm_before) / 1024
    return [
        ("bomb on the wire", f"{len(bomb) / MIB:.1f} MB", ""),
        ("bomb answer", f"{result['status']} in {result['seconds']:.2f} s", "413, as a collector answers"),
        ("bomb answer body", str(result["body"]), ""),
        ("server RSS before", f"{baseline / 1024:.0f} MB", ""),
        ("server RSS peak during (5 ms samples)", f"{sampler.peak / 1024:.0f} MB", f"rise {(sampler.peak - baseline) / 1024:+.0f} MB; must be < +100 MB"),
        ("server peak RSS rise (VmHWM)", f"{hwm_rise:+.0f} MB", "< +100 MB (issue 21: +6,152 MB before)"),
        ("server RSS after", f"{after / 1024:.0f} MB", ""),
        ("GETs answered during the bomb", str(len(latencies)), "> 0: not held up (issue 21: blocked 19.8 s before)"),
        ("GET latency during the bomb, median / max", f"{statistics.median(latencies):.1f} / {max(latencies):.1f} ms" if latencies else "-", ""),
    ]


def big_post(url: str, pid: int, size: int) -> list[tuple[str, str, str]]:
    port = int(url.rsplit(":", 1)[1])
    baseline = status_kb(pid, "VmHWM")
    with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:  # announced: refused from the headers
        raw.sendall(f"POST /v1/conversations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n".encode())
        sent = 0
        try:
            while sent < size:
                raw.sendall(b" " * MIB)
                sent += MIB
        except OSError:
            pass
        try:
            announced = raw.recv(200).decode(errors="replace").split("\r\n", 1)[0]
        except OSError as exc:
            announced = f"({exc})"

    def chunks() -> Iterator[bytes]:
        for _ in range(size // MIB):
            yield b" " * MIB

    try:
        chunked = str(httpx.post(f"{url}/v1/conversations", content=chunks(), headers={"Content-Type": "application/json"}, timeout=120).status_code)
    except httpx.HTTPError as exc:
        chunked = f"connection closed by the server ({type(exc).__name__})"
    rise = (status_kb(pid, "VmHWM") - baseline) / 1024
    return [
        (f"{size / 1e6:.0f} MB POST /v1/conversations, Content-Length", announced, f"413 after {sent / MIB:.0f} MiB sent"),
        (f"{size / 1e6:.0f} MB POST /v1/conversations, chunked", chunked, "413 (or closed) once the limit is read"),
        ("server peak RSS rise for both", f"{rise:+.0f} MB", "issue 21: +1,550 MB before"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bomb-gb", type=float, default=3.0, help="GiB the gzip bomb inflates to")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra `serve` option (repeatable)")
    args = parser.parse_args()
    bomb = gzip_bomb(args.bomb_gb)
    with tempfile.TemporaryDirectory() as tmp:
        server, url = start_server(Path(tmp) / "bench.db", args.serve_arg)
        try:
            rows = bomb_run(url, server.pid, bomb) + big_post(url, server.pid, 221_000_000)
        finally:
            server.send_signal(signal.SIGINT)
            server.communicate(timeout=30)
    print(f"gzip bomb of {args.bomb_gb:g} GiB; serve {' '.join(args.serve_arg) or '(default limits)'}; load average {os.getloadavg()[0]:.2f}")
    print_table(rows)


if __name__ == "__main__":
    main()
