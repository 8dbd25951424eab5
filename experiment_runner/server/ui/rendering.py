"""Rendering the UI's pages: one Jinja2 environment over the package's templates, and the page response.

Every page is sent with a Content-Security-Policy that allows this server only (`'self'`): the page's one
script and style sheet come from `/ui/static/`, nothing loads from anywhere else, forms post back here.
Jinja2 is imported only here (and in `report/html.py`).
"""

import functools
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from experiment_runner import __version__
from experiment_runner.report.highlight import label_class, label_colour
from experiment_runner.report.html import template_environment
from experiment_runner.server.ui import views

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SIGNED_IN = "experiment_runner.ui_signed_in"  # set in the ASGI scope by `session.SessionAuth`
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


@functools.cache
def environment() -> Any:
    """The templates' environment (the report's settings: autoescaping, undefined names an error), the UI's filters."""
    env = template_environment(
        "experiment_runner.server.ui",
        num=views.number,
        usd=views.usd,
        metric=views.formatted,
        colour=label_colour,
        css=label_class,
        when=lambda stamp: stamp[:19].replace("T", " ") + " UTC" if stamp else "–",
    )
    env.globals.update(version=__version__, states=views.STATES, metric_title=views.metric_title)
    return env


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The rendered template as an HTML response with the UI's security headers."""
    signed_in = bool(request.scope.get(SIGNED_IN))
    html = environment().get_template(template).render(request=request, signed_in=signed_in, **context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
