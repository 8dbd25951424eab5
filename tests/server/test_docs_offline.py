"""`/docs` works with no network: Swagger UI from the package, nothing fetched outside the server (real Chromium)."""

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from experiment_runner.server.app import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "s3cret"


@pytest.fixture
def served(store) -> Iterator[str]:
    """The app (with a token, so the docs' public paths are exercised) on a real uvicorn server in a thread."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store, token=TOKEN), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_the_docs_page_names_no_url_outside_the_server(served) -> None:
    html = httpx.get(f"{served}/docs").text
    outside = [u for u in re.findall(r"""(?:src|href|url)\s*[:=(]\s*['"]?([^'"\s)>]+)""", html) if "//" in u]
    assert outside == [], outside
    for asset in re.findall(r"""(?:src|href)=['"](/[^'"]+)['"]""", html):  # script, stylesheet, favicon: public, served
        response = httpx.get(served + asset)
        assert response.status_code == 200 and len(response.content) > 100, asset
    assert httpx.get(f"{served}/redoc").status_code in (401, 404)  # no second docs page with outside links
    assert httpx.get(f"{served}/docs/static/../../v1/experiments").status_code != 200  # the public prefix opens nothing else


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_docs_render_every_operation_in_a_browser_with_the_network_blocked(served, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})

            def route(r) -> None:
                if r.request.url.startswith(served):
                    r.continue_()
                else:  # anything else would leave the machine: record it and refuse it
                    outside.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(f"{served}/docs", wait_until="domcontentloaded")
            page.wait_for_selector(".opblock-summary-path", timeout=20000)
            paths = {p.strip() for p in page.locator(".opblock-summary-path").all_inner_texts()}
            text = page.inner_text("body")
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
        finally:
            browser.close()
    assert outside == []
    assert {"/v1/experiments", "/v1/experiments/{experiment_id}", "/v1/conversations", "/v1/traces"} <= {p.replace("\u200b", "") for p in paths}
    assert "experiment-runner" in text and "Authorize" in text
