"""Starting the server: bind the socket, configure uvicorn (logging included), run until stopped.

`serve` and `view` call one function each; the CLI only parses options and prints what it is told
through `on_listening` (and `on_started`, once connections are accepted). The socket is bound before
uvicorn starts, so a port in use or a bad address is one `BadInputError` rather than a server log.
Ctrl-C stops uvicorn cleanly and then reaches the caller as `KeyboardInterrupt`.
"""

import copy
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from experiment_runner.conversation import JSONObject
from experiment_runner.errors import BadInputError
from experiment_runner.server.allowlist import is_loopback
from experiment_runner.server.bodies import BodyLimits
from experiment_runner.store import Store

VIEW_HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0  # how long `on_started` waits for the server to accept connections
SHUTDOWN_GRACE = 5  # seconds uvicorn gives open requests at shutdown


@dataclass(frozen=True)
class Listening:
    """Where the server listens, told to the caller before it starts serving."""

    host: str
    port: int
    loopback: bool  # only this machine can connect

    @property
    def url(self) -> str:
        """`http://HOST:PORT`, an IPv6 address in brackets."""
        shown = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"


@dataclass(frozen=True)
class ServeOptions:
    """What `serve` takes besides the store."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    concurrency: int = 8
    allow_api_bases: tuple[str, ...] = ()
    limits: BodyLimits | None = None


def serve(store: Store, options: ServeOptions, on_listening: Callable[[Listening], None]) -> None:
    """Serve the REST API (and the web UI) on `options.host:port` until stopped."""
    from experiment_runner.server.app import create_app

    sock = bind(options.host, options.port)
    app = create_app(store, token=options.token, concurrency=options.concurrency,
                     allow_api_bases=options.allow_api_bases, limits=options.limits)
    _run(app, sock, options.host, on_listening)


def view(store: Store, port: int, concurrency: int, on_listening: Callable[[Listening], None],
         on_started: Callable[[], None]) -> None:
    """Serve the web UI on loopback, without a token; `on_started` runs (in a thread) once it accepts connections."""
    from experiment_runner.server.app import create_app

    sock = bind(VIEW_HOST, port)
    _run(create_app(store, concurrency=concurrency), sock, VIEW_HOST, on_listening, on_started)


def bind(host: str, port: int) -> socket.socket:
    """A bound, inheritable socket; `BadInputError` `cannot listen on HOST:PORT: REASON` if that fails."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise BadInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BadInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def log_config() -> JSONObject:
    """uvicorn's logging, with the package's log lines (runs, retries, fallbacks, lease takeovers) at INFO beside its own."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["experiment_runner"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _run(app: Any, sock: socket.socket, host: str, on_listening: Callable[[Listening], None],
         on_started: Callable[[], None] | None = None) -> None:
    """Run uvicorn on the bound `sock` until it stops."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_config=log_config(), timeout_graceful_shutdown=SHUTDOWN_GRACE))
    on_listening(Listening(host, sock.getsockname()[1], is_loopback(host)))
    if on_started is not None:
        threading.Thread(target=_when_started, args=(server, on_started), daemon=True, name="on-started").start()
    server.run(sockets=[sock])


def _when_started(server: Any, callback: Callable[[], None]) -> None:
    """Call `callback` once `server` accepts connections (never, if it stops or takes over `STARTUP_TIMEOUT`)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or server.should_exit:
            return
        time.sleep(0.05)
    callback()
