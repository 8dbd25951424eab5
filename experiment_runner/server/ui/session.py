"""The UI's sign-in when `serve --token` is set: the token is asked once and kept in a session cookie.

The cookie holds a random session id (never the token) that this server process keeps in memory, so
signing out ends it for good and a restart ends every session; it is `HttpOnly` (no script reads it),
`SameSite=Strict` (no other site's page sends it), and has no expiry (it ends with the browser session).
`SessionAuth` runs outside the API's `BearerAuth`: a request with a valid cookie is passed on carrying
the bearer credential, so every route, `/v1` included (the export link), accepts either; a browser
asking for a UI page without either is sent to the sign-in page instead of a 401.

Forms post back with the cookie, so `same_origin` refuses a POST whose `Origin` is another site (with or
without a token: without one there is no cookie to protect, but a page elsewhere could still post).
"""

import hashlib
import secrets
import threading
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from experiment_runner.server.ui.rendering import SIGNED_IN, page

COOKIE = "experiment_runner_session"
LOGIN = "/ui/login"
PUBLIC_PREFIXES = ("/ui/static/",)
MAX_FORM_BYTES = 1_000_000
MAX_SESSIONS = 1000  # signed-in browsers kept; the oldest sign-in is forgotten past this

router = APIRouter(include_in_schema=False)


class Sessions:
    """The signed-in sessions of this server process: a random id per sign-in, kept as its SHA-256 digest
    (a lookup never compares the secret itself), ended by `end` (sign out) or when the server stops."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self._digests: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit

    @staticmethod
    def _digest(session_id: str) -> str:
        return hashlib.sha256(session_id.encode("utf-8", errors="replace")).hexdigest()

    def start(self) -> str:
        """A new session id (256 random bits) for a browser that gave the right token."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._digests[self._digest(session_id)] = None
            while len(self._digests) > self.limit:
                self._digests.popitem(last=False)
        return session_id

    def valid(self, session_id: str | None) -> bool:
        """Whether `session_id` is a session this server started and nobody ended."""
        if not session_id:
            return False
        with self._lock:
            return self._digest(session_id) in self._digests

    def end(self, session_id: str | None) -> None:
        """Forget the session (sign out): its cookie no longer signs anyone in."""
        if session_id:
            with self._lock:
                self._digests.pop(self._digest(session_id), None)


def is_ui_path(path: str) -> bool:
    """The UI's pages: `/` and everything under `/ui/`."""
    return path == "/" or path.startswith("/ui/") or path == "/ui"


def _cookie(scope: Any) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"cookie":
            for pair in value.decode("latin-1").split(";"):
                key, _, content = pair.strip().partition("=")
                if key == COOKIE:
                    return content
    return None


class SessionAuth:
    """ASGI middleware outside `BearerAuth`: a valid session cookie stands for the bearer token."""

    def __init__(self, app: Any, token: str, sessions: Sessions) -> None:
        self.app = app
        self.token = token
        self.sessions = sessions

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        cookie = _cookie(scope)
        public = path == LOGIN or path.startswith(PUBLIC_PREFIXES)
        signed_in = self.sessions.valid(cookie)
        if public or signed_in:
            headers = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
            scope = {**scope, "headers": [*headers, (b"authorization", f"Bearer {self.token}".encode())], SIGNED_IN: signed_in}
        elif is_ui_path(path) and scope["method"] in ("GET", "HEAD") and not _has_authorization(scope):
            target = path + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
            await RedirectResponse(f"{LOGIN}?next={quote(target, safe='')}", status_code=303)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _has_authorization(scope: Any) -> bool:
    return any(name == b"authorization" for name, _ in scope["headers"])


async def form_fields(request: Request) -> dict[str, list[str]]:
    """The fields of an `application/x-www-form-urlencoded` body (every value of a repeated field)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)


def same_origin(request: Request) -> None:
    """Refuse (403) a form post that a page of another origin sent."""
    origin = request.headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.netloc != request.headers.get("host", "") or parts.scheme != request.url.scheme:
            raise HTTPException(403, "cross-origin form post refused")
    elif request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise HTTPException(403, "cross-origin form post refused")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this server, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get(LOGIN)
async def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form (only useful when the server has a token)."""
    if not request.app.state.ui_token:
        return RedirectResponse(safe_next(next), status_code=303)
    return page(request, "login.html.j2", next=safe_next(next), error=None)


@router.post(LOGIN)
async def login(request: Request) -> Response:
    """Check the token; right: set the session cookie and go on; wrong: the form again, 401."""
    same_origin(request)
    fields = await form_fields(request)
    token = request.app.state.ui_token
    given = (fields.get("token") or [""])[0]
    target = safe_next((fields.get("next") or ["/"])[0])
    if not token:
        return RedirectResponse(target, status_code=303)
    if not secrets.compare_digest(given.encode(), token.encode()):
        return page(request, "login.html.j2", status_code=401, next=target, error="That is not the token this server was started with.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, request.app.state.ui_sessions.start(), httponly=True, samesite="strict", path="/")
    return response


@router.post("/ui/logout")
async def logout(request: Request) -> Response:
    """End the session (its cookie no longer works, even if kept) and delete the cookie."""
    same_origin(request)
    request.app.state.ui_sessions.end(request.cookies.get(COOKIE))
    response = RedirectResponse(LOGIN if request.app.state.ui_token else "/", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
