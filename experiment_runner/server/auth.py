"""Bearer-token authentication for the API: ASGI middleware that runs before routing and body parsing."""

import secrets
from typing import Any

from fastapi.responses import JSONResponse

PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})
PUBLIC_PREFIXES = ("/docs/static/",)  # the docs page's own script, stylesheet and favicon


class BearerAuth:
    """ASGI middleware: every request except the docs needs `Authorization: Bearer <token>` (else 401).

    It runs before routing and body parsing, so an unauthenticated caller learns nothing about the input.
    """

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not _public(scope["path"]) and not self._authorized(scope):
            response = JSONResponse(
                {"detail": "missing or wrong bearer token: send the header `Authorization: Bearer <token>`"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Any) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return secrets.compare_digest(scheme.lower() + b" " + credentials.strip(), self.expected)
        return False


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
