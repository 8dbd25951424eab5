"""The report in a real browser (issue 8): headless Chromium runs the page's script, we read the DOM it built.

Chromium is driven by its command line: `--dump-dom` prints the DOM after the scripts ran, and the page
reads its filters from the URL fragment, so `report.html#label=...` dumps the filtered list.
"""

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from factories import build_finished

from experiment_runner.report.html import write_report

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")


class ShownItems(HTMLParser):
    """The item cards the script rendered: source id -> [(marked text, labels)], and the count line."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, list[tuple[str, str]]] = {}
        self.count = ""
        self._article: str | None = None
        self._mark: list[str] | None = None
        self._in_count = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "article":
            self._article = a["data-source"] or ""
            self.items[self._article] = []
        elif tag == "mark" and self._article is not None:
            self._mark = [a["data-labels"] or "", ""]
        self._in_count = a.get("id") == "count"

    def handle_endtag(self, tag: str) -> None:
        if tag == "mark" and self._mark is not None and self._article is not None:
            self.items[self._article].append((self._mark[1], self._mark[0]))
            self._mark = None
        elif tag == "article":
            self._article = None
        self._in_count = False

    def handle_data(self, data: str) -> None:
        if self._mark is not None:
            self._mark[1] += data
        if self._in_count:
            self.count += data


def chromium(binary: str, profile: Path, url: str, *args: str) -> str:
    out = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args, url],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def shown(binary: str, profile: Path, url: str) -> ShownItems:
    parser = ShownItems()
    parser.feed(chromium(binary, profile, url, "--dump-dom"))
    return parser


def test_report_in_headless_chromium(store, tmp_path) -> None:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); the report's browser test needs it")
    path = write_report(store, build_finished(store), tmp_path / "report.html")
    url, profile = path.resolve().as_uri(), tmp_path / "profile"

    page = shown(binary, profile, url)
    assert page.count == "Items 1–6 of 6"
    assert list(page.items) == ["hw-weather-tools", "hw-booking-args", "hw-reasoning-math", "hw-refusal",
                                "ragtruth-15175", "ragtruth-14054"]
    assert page.items["hw-weather-tools"] == [("70%", "Fabrication")]
    assert page.items["hw-booking-args"] == [("Booking it now.", "Fabrication"), ("6", "Fabrication")]
    assert page.items["hw-refusal"] == [("I'm sorry, but I can't give medical advice. Please ask your doctor.",
                                         "Incorrect Refusal")]
    assert page.items["hw-reasoning-math"] == [] and page.items["ragtruth-15175"] == []
    dom = chromium(binary, profile, url, "--dump-dom")
    assert '<th>party_size</th><td class="txt"><mark class="hl lbl-fabrication"' in dom  # the parameter's value

    refusals = shown(binary, profile, url + "#label=Incorrect%20Refusal")
    assert list(refusals.items) == ["hw-refusal"] and refusals.count == "Items 1–1 of 1 (filtered from 6)"
    failed = shown(binary, profile, url + "#failed=1")
    assert list(failed.items) == ["hw-reasoning-math", "ragtruth-15175"]  # evaluation failed, item failed
    search = shown(binary, profile, url + "#q=UMBRELLA&issues=1")
    assert list(search.items) == ["hw-weather-tools"]

    screenshot = tmp_path / "report.png"
    chromium(binary, profile, url, f"--screenshot={screenshot}", "--window-size=1400,1000")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 20_000
