"""Which model endpoints a REST caller may name: the server must not fetch arbitrary URLs for callers.

A request's `api_base`/`evaluator_api_base` must be a loopback URL (the default) or start with one of the
URLs given to `serve --allow-api-base` (env EXPERIMENT_RUNNER_ALLOW_API_BASE, space-separated): same
scheme, host and port, and a path under the allowed one. Paths are compared normalised: percent-escapes
decoded, `.` and `..` segments resolved and repeated slashes collapsed, as the endpoint's server would read
them, so `/v1/../admin` is not under `/v1`. Model calls follow no redirect (`engine/llm.py`), so the URL
checked here is the only one called.
"""

import ipaddress
import posixpath
import re
from urllib.parse import unquote, urlsplit

from experiment_runner.errors import BadInputError


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _key(url: str) -> tuple[str, str, int | None, str] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80), _normal_path(parts.path)


def _normal_path(path: str) -> str:
    """`path` as a server resolves it, without a trailing slash: `/v1/./a/../b//c/` -> `/v1/b/c`."""
    decoded = re.sub(r"/+", "/", unquote(path).replace("\\", "/"))
    normal = posixpath.normpath(decoded) if decoded else ""
    return "" if normal in ("/", ".") else normal.rstrip("/")


def check_api_base(url: str | None, allowed: tuple[str, ...], field: str) -> None:
    """`BadInputError` (422 at `body.<field>`) unless `url` is absent, loopback, or under an allowed URL."""
    if url is None:
        return
    key = _key(url)
    if key is None:
        raise BadInputError(f"{field} must be an http(s) URL, got {url!r}", loc=("body", field))
    if is_loopback(key[1]):
        return
    for entry in allowed:
        allowed_key = _key(entry)
        if allowed_key and allowed_key[:3] == key[:3] and (key[3] + "/").startswith(allowed_key[3] + "/"):
            return
    raise BadInputError(
        f"{field} {url!r} is not allowed: this server only calls loopback URLs and those given to `serve --allow-api-base`",
        loc=("body", field),
    )
