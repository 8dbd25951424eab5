"""The web UI in a real browser (issue 26): Debian's Chromium driven by Playwright against a real uvicorn server.

Every request the pages make is routed: anything not to 127.0.0.1 is aborted and fails the test, and so
does any error a page logs (a script error, a Content-Security-Policy violation). Screenshots go to
tmp_path, or to $EXPERIMENT_RUNNER_SCREENSHOTS (how docs/ui-*.png were made).
"""

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from factories import SpanSpec, build_finished, finish_experiment, import_fixture, new_experiment
from playwright.sync_api import expect

from experiment_runner.fixtures.fakellm import FakeLLM
from experiment_runner.server.app import create_app
from experiment_runner.store import Store

SLOW_MS = 5000  # the one slow reply of the progress test: the page must show the run part-way for this long
SCREENSHOTS_ENV = "EXPERIMENT_RUNNER_SCREENSHOTS"  # a folder to keep the screenshots in (docs/ uses them)


class LiveServer:
    """`create_app(store, **options)` served by uvicorn on a free loopback port until `stop()`."""

    def __init__(self, store: Store, **options: Any) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(store, **options), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def live_server(store: Store) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def start(**options: Any) -> LiveServer:
        started.append(LiveServer(store, **options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


class Browser:
    """Chromium with every request routed: loopback ones go through, anything else is aborted and recorded."""

    def __init__(self, playwright: Any, shots: Path) -> None:
        self.browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.shots = shots

    def page(self, width: int = 1280, height: int = 900) -> Any:
        context = self.browser.new_context(viewport={"width": width, "height": height})
        context.route("**/*", self._route)
        page = context.new_page()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        return page

    def _route(self, route: Any) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def check(self) -> None:
        """No request left 127.0.0.1 and no page logged an error (a blocked script, a CSP violation)."""
        assert self.outside == [], f"requests left the machine: {self.outside}"
        assert self.errors == [], f"the pages logged errors: {self.errors}"

    def screenshot(self, page: Any, name: str, **options: Any) -> Path:
        path = self.shots / name
        page.screenshot(path=str(path), **options)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the UI's browser tests need it")
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        driver = Browser(playwright, shots)
        yield driver
        driver.browser.close()
    driver.check()



def seed(store) -> tuple[str, str, str]:
    """The tool-call experiment of the report tests, and two over the same ten RAGTruth conversations."""
    tools = build_finished(store)
    rag = import_fixture(store)[:10]
    a = new_experiment(store, rag, name="baseline")
    finish_experiment(store, a, spans={rag[i]: [SpanSpec("Fabrication", 0, 12)] for i in (0, 3, 6)})
    b = new_experiment(store, rag, name="candidate")
    finish_experiment(store, b, spans={rag[i]: [SpanSpec("Context Misattribution", 5, 30)] for i in (0, 1)}, failed_evaluations=[rag[9]])
    return tools, a, b


def test_list_experiment_compare_and_phone_width(store, live_server, browser) -> None:
    tools, a, b = seed(store)
    server = live_server()
    page = browser.page()

    page.goto(server.url + "/")
    assert page.locator("#experiments tbody tr").count() == 3
    assert "completed with failures" in page.locator(f"tr[data-id='{tools}']").inner_text()
    browser.screenshot(page, "ui-list.png")
    page.get_by_label("Name contains").fill("cand")
    page.get_by_label("Name contains").press("Enter")  # the filter form, by keyboard
    page.wait_for_url("**/?q=cand*")
    assert page.locator("#experiments tbody tr").count() == 1 and "candidate" in page.inner_text("#experiments")
    page.goto(server.url + "/")
    page.get_by_role("link", name="Name").focus()
    page.keyboard.press("Enter")  # sort by name, descending on first use
    page.wait_for_url("**sort=name**")
    names = page.locator("#experiments a.name").all_inner_texts()
    assert names == sorted(names, key=str.lower, reverse=True)

    page.goto(server.url + f"/ui/experiments/{tools}")
    assert page.locator("#metrics .card").first.inner_text().endswith("Issue rate")
    errors = page.inner_text("section.errors")
    assert "model call failed: HTTP 500" in errors and "evaluator reply was not JSON" in errors
    marks = page.locator("mark.hl")
    assert marks.count() == 4
    # a span is named in text, not colour alone: the inline label, and a distinct underline per label
    assert page.evaluate("getComputedStyle(document.querySelector('mark.hl'), '::after').content") == '"Fabrication"'
    refusal = page.locator("mark.lbl-incorrect-refusal")
    assert refusal.evaluate("m => getComputedStyle(m).textDecorationStyle") == "double"
    refusal.focus()  # reachable by keyboard; focusing explains it
    assert page.locator("#pop").is_visible() and "Incorrect Refusal: because 0" in page.inner_text("#pop")
    assert "active" in (page.locator("li.ann.active").get_attribute("class") or "")
    browser.screenshot(page, "ui-experiment.png", full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": 1500})
    page.get_by_label("Label", exact=True).select_option("Incorrect Refusal")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**label=Incorrect+Refusal**")
    assert page.locator("article.item").count() == 1 and "1 item matches" in page.inner_text("#item-count")

    page.goto(server.url + "/ui/compare")
    page.get_by_label("A (baseline)").select_option(a)
    page.get_by_label("B (candidate)").select_option(b)
    page.get_by_role("button", name="Compare").click()
    page.wait_for_selector("#compare-metrics")
    metrics = page.inner_text("#compare-metrics")
    assert re.search(r"Issue rate\s+30\.0%\s+22\.2%\s+-7\.8 pp", metrics), metrics
    assert "Context Misattribution" in page.inner_text("#compare-labels")
    assert "not significant" in page.inner_text("#paired-table") and page.locator("#paired-table .sig").count() == 0
    rag = import_fixture(store)[:10]
    worse = new_experiment(store, rag, name="worse")  # an issue on every item: 7 of the 10 gain one against the baseline
    finish_experiment(store, worse, spans={c: [SpanSpec("Fabrication", 0, 12)] for c in rag})
    page.goto(server.url + f"/ui/compare?a={a}&b={worse}")
    issue_rate = page.locator("#paired-table tr[data-metric='issue_rate']")
    assert re.search(r"Issue rate\s+30\.0%\s+100\.0%\s+\+70\.0 pp\s+\[.+\] pp\s+0\.0156\s+significant \*", issue_rate.inner_text())
    marker = issue_rate.locator(".sig")
    assert marker.is_visible() and marker.inner_text() == "significant *"  # words and a star, not colour alone
    assert "20240601" in page.inner_text("#compare-paired") and "20,240,601" not in page.inner_text("main")
    browser.screenshot(page, "ui-compare.png", full_page=True)

    phone = browser.page(width=390, height=844)
    for path in ("/", f"/ui/experiments/{tools}", f"/ui/compare?a={a}&b={b}", "/ui/runs/new", "/ui/conversations"):
        phone.goto(server.url + path)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390, path  # nothing wider than the phone
    phone.goto(server.url + "/")
    browser.screenshot(phone, "ui-mobile.png", full_page=True)
    browser.check()


def test_progress_updates_while_a_run_started_from_the_form_goes(store, live_server, browser) -> None:
    ids = import_fixture(store)[:3]
    slow = import_fixture(store)[2]
    with FakeLLM() as fake:
        from experiment_runner.store.queries.conversations import conversation

        with store.read() as session:
            found = conversation(session.connection(), slow)
        assert found is not None
        first = found["messages"][0]["parts"][0]
        assert first["type"] == "text"
        prompt = first["content"]
        fake.configure(scripts=[{"match": prompt[:200], "reply": {"content": "slow reply", "latency_ms": SLOW_MS}}])
        server = live_server()
        page = browser.page()
        page.goto(server.url + "/ui/runs/new")
        page.get_by_label("Name").fill("live run")
        page.get_by_label("Target model").fill("openai/fake-target")
        page.get_by_label("Target API base").fill(fake.api_base)
        page.get_by_label("Only the ones chosen below").check()
        page.get_by_label("Chosen conversations").select_option(ids)
        page.get_by_role("button", name="Estimate cost (dry run)").click()
        page.wait_for_selector("#estimate")
        assert "3 items: 3 target calls, 0 evaluator calls" in page.inner_text("#estimate") and fake.request_count == 0
        listing = browser.page()
        listing.goto(server.url + "/")  # opened before the run starts: the new run must show up without a reload
        assert "No experiments yet" in listing.inner_text("main")
        listing.evaluate("window.notReloaded = true")
        page.get_by_role("button", name="Start run").click()
        page.wait_for_url("**/ui/experiments/*")
        experiment_id = page.url.split("/ui/experiments/")[1].split("?")[0]

        row = listing.locator(f"tr[data-id='{experiment_id}']")
        row.wait_for(timeout=SLOW_MS * 2)
        assert listing.evaluate("window.notReloaded") is True and "1 of 1 experiment" in listing.inner_text("#count")
        # part-way: the fast items are done, the slow one is in progress (the page polls; no reload)
        expect(page.locator("#progress-text")).to_have_text("2 of 3 done · 1 in progress", timeout=SLOW_MS * 4)
        assert "running" in page.inner_text(".state")
        browser.screenshot(page, "ui-progress.png", clip={"x": 0, "y": 0, "width": 1280, "height": 700})
        row.get_by_text("3 of 3 done").wait_for(timeout=SLOW_MS * 6)  # the list row updates itself too
        page.locator("#finished").wait_for(state="visible", timeout=SLOW_MS * 4)
        assert page.inner_text("#progress-text") == "3 of 3 done" and "completed" in page.inner_text(".state")
        assert "completed" in row.inner_text() and listing.evaluate("window.notReloaded") is True
        assert "$0.0000" not in row.inner_text() and "unknown" in row.inner_text()  # fake-target has no price
        page.reload()
        assert page.locator("article.item").count() == 3 and "slow reply" in page.inner_text("#item-list")
    browser.check()


def test_token_is_asked_once_and_kept_in_a_strict_http_only_cookie(store, live_server, browser) -> None:
    experiment_id = build_finished(store)
    server = live_server(token="s3cret")
    page = browser.page()
    page.goto(server.url + f"/ui/experiments/{experiment_id}")
    assert "/ui/login" in page.url
    page.get_by_label("Token").fill("wrong")
    page.get_by_label("Token").press("Enter")
    assert "not the token this server was started with" in page.inner_text("[role=alert]")
    assert browser.errors == ["Failed to load resource: the server responded with a status of 401 (Unauthorized)"]
    browser.errors.clear()  # the refused sign-in is a 401 page, as it should be
    page.get_by_label("Token").fill("s3cret")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/ui/experiments/{experiment_id}")  # back where the user was going
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["expires"] == -1
    assert "s3cret" not in cookie["value"] and page.evaluate("document.cookie") == ""  # no script can read it
    page.goto(server.url + "/ui/conversations")  # asked once: the next page just opens
    assert "/ui/login" not in page.url and "hw-refusal" in page.inner_text("main")
    assert page.request.get(server.url + f"/v1/experiments/{experiment_id}/export").status == 200  # the export link
    stranger = browser.page()
    assert stranger.request.get(server.url + "/v1/experiments").status == 401
    assert stranger.request.get(server.url + "/v1/experiments", headers={"Authorization": "Bearer s3cret"}).status == 200
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/login")
    assert page.context.cookies() == []
    page.context.add_cookies([{k: cookie[k] for k in ("name", "value", "domain", "path", "httpOnly", "sameSite")}])
    page.goto(server.url + "/ui/conversations")  # the cookie kept from before signing out: the session has ended
    assert "/ui/login" in page.url
    browser.check()
