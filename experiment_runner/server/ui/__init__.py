"""The web UI that `serve` (and `view`) answer at `/`: server-rendered pages over the store, a little plain JS.

`pages` (read-only pages and their live JSON), `actions` (start, resume, delete), `session` (the token's
sign-in and session cookie), `views` (what templates show, pure), `rendering` (Jinja2 and the page
response); `templates/` and `static/` ship in the package, so nothing is loaded from the network.
"""

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

__all__ = ["install_ui"]


def install_ui(app: FastAPI, token: str | None) -> None:
    """Mount the UI on the API's app: its routes, its static files, and (with a token) the session sign-in.

    Call it after the API's own auth middleware is added, so the session check runs first.
    """
    from experiment_runner.server.ui import actions, pages, session

    app.state.ui_token = token
    app.state.ui_sessions = session.Sessions()
    app.include_router(session.router)
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount("/ui/static", StaticFiles(packages=[("experiment_runner.server.ui", "static")]), name="ui-static")
    if token:
        app.add_middleware(session.SessionAuth, token=token, sessions=app.state.ui_sessions)
