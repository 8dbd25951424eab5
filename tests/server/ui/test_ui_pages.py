"""The web UI over HTTP (issue 26): pages, filters, the run form's checks and estimate, resume, delete, sign-in."""

import re
import time
from collections.abc import Iterator

import pytest
from factories import SpanSpec, build_finished, finish_experiment, import_fixture, new_experiment
from fastapi.testclient import TestClient

from experiment_runner.server.app import create_app
from experiment_runner.server.ui.comparing import compare_sections, paired_view
from experiment_runner.server.ui.session import COOKIE
from experiment_runner.server.ui.views import cost_texts
from experiment_runner.store import Store


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(store)) as test_client:
        yield test_client


def text(html: str) -> str:
    """The page's text, tags dropped and whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_list_filters_and_sorts_and_pages_are_locked_down(client, store) -> None:
    finished = build_finished(store)
    pending = new_experiment(store, import_fixture(store)[:3], name="zeta pending")
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"] and "script-src 'self'" in page.headers["content-security-policy"]
    body = text(page.text)
    assert "pass-through ☔" in body and "zeta pending" in body and "2 of 2 experiments" in body
    assert "6 of 6 done · 1 failed" in body and "completed with failures" in body and "75.0%" in body
    assert f'data-id="{pending}" data-open="1"' in page.text and f'data-id="{finished}" data-open="0"' in page.text
    assert "zeta pending" not in text(client.get("/?q=PASS").text)
    assert "pass-through" not in text(client.get("/?state=unfinished").text)
    by_name = client.get("/?sort=name&order=asc").text
    assert by_name.index("pass-through ☔") < by_name.index("zeta pending")
    assert 'aria-sort="ascending"' in by_name
    assert client.get("/?sort=drop+table").status_code == 422
    assert 'src="/ui/static/ui.js"' in page.text and "http" not in re.sub(r'href="http://127|https?://[^"]*/v1', "", "".join(re.findall(r'(?:src|href)="([^"]+)"', page.text)))


def test_live_rows_report_progress_as_the_page_shows_it(client, store) -> None:
    ids = import_fixture(store)[:3]
    experiment_id = new_experiment(store, ids, name="live")
    before = client.get(f"/ui/live/experiments?id={experiment_id}").json()["rows"][0]
    assert before["progress_text"] == "0 of 3 done" and before["open"] is True and before["state"] == "unfinished"
    finish_experiment(store, experiment_id)
    after = client.get(f"/ui/live/experiments?id={experiment_id}&id=gone").json()["rows"]
    assert [r["progress_text"] for r in after] == ["3 of 3 done"] and after[0]["open"] is False
    assert after[0]["state"] == "completed" and after[0]["segments"]["completed"] == 100.0
    live = client.get(f"/ui/experiments/{experiment_id}/live").json()
    assert live["metrics"]["issue_rate"] == "0.0%" and live["cost"]["total"] == "unknown"  # no reply had a price
    unevaluated = new_experiment(store, ids, name="no judge", evaluator=None)
    finish_experiment(store, unevaluated)
    assert client.get(f"/ui/experiments/{unevaluated}/live").json()["metrics"]["issue_rate"] == "–"  # not 0%: nothing evaluated


def test_unknown_costs_read_unknown_or_at_least_never_zero(client, store) -> None:
    partly = build_finished(store)  # 3 of 5 replies unpriced, the evaluator's calls unpriced
    unpriced = new_experiment(store, import_fixture(store)[:3], name="no price", evaluator=None)
    finish_experiment(store, unpriced)  # no reply has a price
    listing = client.get("/?sort=cost&order=desc").text
    ascending = client.get("/?sort=cost&order=asc").text
    rows = {r["id"]: r for r in client.get(f"/ui/live/experiments?id={partly}&id={unpriced}").json()["rows"]}
    assert rows[partly]["cost_text"] == "at least $0.0003" and rows[unpriced]["cost_text"] == "unknown"
    assert rows[unpriced]["cost"] is None
    assert all(page.index("pass-through ☔") < page.index("no price") for page in (listing, ascending))  # unknown sorts last
    assert "$0.0000" not in listing and "at least $0.0003" in text(listing)

    body = text(client.get(f"/ui/experiments/{partly}").text)
    assert "at least $0.0533 Cost per 1k items" in body
    assert "Target calls at least $0.0003 Evaluator calls unknown Total at least $0.0003" in body
    assert "3 of 5 completed replies have no known price (litellm has none for the model); the cost counts them as $0" in body
    body = text(client.get(f"/ui/experiments/{unpriced}").text)
    assert "unknown Cost per 1k items" in body and "Target calls unknown Evaluator calls – Total unknown" in body
    assert "$0.0000" not in body and "3 of 3 completed replies have no known price (litellm has none for the model)." in body
    live = client.get(f"/ui/experiments/{unpriced}/live").json()
    assert live["cost"] == {"target": "unknown", "per_1k": "unknown", "evaluator": "–", "total": "unknown"}
    assert live["metrics"]["cost_per_1k"] == "unknown"

    def costs(per_1k: float, unpriced_items: int, evaluator: float | None, received: int = 2) -> dict[str, str]:
        return cost_texts({"metrics": {"cost_per_1k": per_1k}, "completed_items_count": 2, "unpriced_items_count": unpriced_items,
                           "evaluator_cost_usd": evaluator, "evaluations_received": received})

    assert costs(0.0, 2, 0.0123)["total"] == "at least $0.0123"  # an unknown target and a known evaluator
    assert costs(5.0, 0, 0.0123) == {"target": "$0.0100", "per_1k": "$5.0000", "evaluator": "$0.0123", "total": "$0.0223"}
    assert costs(5.0, 0, None) == {"target": "$0.0100", "per_1k": "$5.0000", "evaluator": "unknown", "total": "at least $0.0100"}
    assert costs(5.0, 0, None, received=0)["total"] == "$0.0100"  # no evaluation yet: no evaluator call to price
    assert costs(0.0, 2, None)["total"] == "unknown"


def test_the_live_list_sees_runs_started_after_the_page_loaded(client, store) -> None:
    ids = import_fixture(store)[:3]
    finished = new_experiment(store, ids, name="old")
    finish_experiment(store, finished)
    page = client.get("/").text
    match = re.search(r'data-newest="([^"]+)"', page)
    assert match
    newest = match.group(1)
    assert newest == client.get(f"/ui/live/experiments?id={finished}").json()["rows"][0]["created_at"]
    assert client.get(f"/ui/live/experiments?since={newest}").json()["rows"] == []  # nothing new, nothing open
    started = new_experiment(store, ids, name="started later")
    [row] = client.get(f"/ui/live/experiments?since={newest}").json()["rows"]
    assert row["id"] == started and row["created_at"] > newest and row["open"] is True
    finish_experiment(store, started)
    match = re.search(r'data-newest="([^"]+)"', client.get("/?q=nothing+matches").text)  # filtered, still the newest
    assert match
    newer = match.group(1)
    assert newer == row["created_at"] and client.get(f"/ui/live/experiments?since={newer}").json()["rows"] == []
    [done] = client.get(f"/ui/live/experiments?since={newer}&id={started}").json()["rows"]  # a row it showed open
    assert done["progress_text"] == "3 of 3 done" and done["open"] is False
    reopened = new_experiment(store, ids, name="open, older than the page")
    with store.write() as session:  # an older experiment with open items (resumed elsewhere) is polled too
        session.connection().exec_driver_sql("UPDATE experiment SET created_at = '2000-01-01T00:00:00.000000Z' WHERE id = ?", (reopened,))
    assert [r["id"] for r in client.get(f"/ui/live/experiments?since={newer}").json()["rows"]] == [reopened]
    assert client.get("/ui/live/experiments?since=" + "9" * 41).status_code == 422


def test_experiment_page_shows_metrics_errors_highlights_and_filters(client, store) -> None:
    experiment_id = build_finished(store)
    html = client.get(f"/ui/experiments/{experiment_id}").text
    body = text(html)
    assert body.index("Issue rate") < body.index("Issues per evaluated message")  # the issue rate first
    assert "model call failed: HTTP 500" in body and "evaluator reply was not JSON" in body  # failed item, evaluation
    assert f'href="/v1/experiments/{experiment_id}/export"' in html and f'href="/ui/experiments/{experiment_id}/report.html"' in html
    assert "Structured output" in body and "6 items match" in body
    assert '<mark class="hl lbl-fabrication"' in html and 'title="Fabrication: because 0"' in html
    assert "because 0" in body  # the explanation, in the annotation list too
    refusals = text(client.get(f"/ui/experiments/{experiment_id}?label=Incorrect+Refusal").text)
    assert "1 item matches" in refusals and "hw-refusal" in refusals and "hw-weather-tools" not in refusals
    failed = text(client.get(f"/ui/experiments/{experiment_id}?show=failed").text)
    assert "1 item matches" in failed and "Error: model call failed: HTTP 500" in failed
    report = client.get(f"/ui/experiments/{experiment_id}/report.html")
    assert report.status_code == 200 and 'id="report-data"' in report.text
    missing = client.get("/ui/experiments/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404 and "no experiment with id" in missing.text and "<html" in missing.text
    assert client.get(f"/ui/experiments/{experiment_id}?show=nonsense").status_code == 400


def test_compare_renders_every_field_compare_returns(client, store) -> None:
    ids = import_fixture(store)[:4]
    a, b = new_experiment(store, ids, name="A side"), new_experiment(store, ids, name="B side")
    finish_experiment(store, a)
    finish_experiment(store, b, failed={ids[0]: "boom"})
    body = text(client.get(f"/ui/compare?a={a}&b={b}").text)
    assert "A: A side" in body and "B: B side" in body
    assert "Metrics (B − A)" in body and "Completed items 4 3 -1" in body and "Issue rate 0.0% 0.0% 0.0 pp" in body
    assert "In both 4" in body and "Only in A 0" in body
    assert "Cost per 1k items unknown unknown –" in body  # no reply had a price: unknown, not $0
    # a field compare gains later shows up as a table of its own, one column per key
    result = {"a": {}, "b": {}, "metrics": [{"metric": "issue_rate", "a": 0.5, "b": 0.25, "delta": -0.25, "p_value": 0.0312}],
              "calibration": {"issue_rate": {"mean_difference": -0.25, "ci_low": -0.4, "ci_high": -0.1, "n": 4000, "seed": 20240601}}}
    sections = {s.key: s for s in compare_sections(result)}
    assert sections["metrics"].table.headers == ["Metric", "A", "B", "Δ (B − A)", "P value"]
    assert sections["metrics"].table.rows == [["Issue rate", "50.0%", "25.0%", "-25.0 pp", "0.0312"]]
    assert sections["calibration"].title == "Calibration"
    assert sections["calibration"].table.headers == ["Name", "Mean difference", "Ci low", "Ci high", "N", "Seed"]
    assert sections["calibration"].table.rows == [["issue_rate", "-0.2500", "-0.4000", "-0.1000", "4,000", "20240601"]]
    assert paired_view(result) is None and "paired" not in sections


def test_compare_shows_the_paired_statistics_as_a_table(client, store) -> None:
    ids = import_fixture(store)[:12]
    a, b = new_experiment(store, ids[:11], name="A side"), new_experiment(store, ids[1:], name="B side")
    finish_experiment(store, a)
    finish_experiment(store, b, spans={c: [SpanSpec("Fabrication", 0, 5)] for c in ids[1:11]})  # 10 of 10 paired gain one
    html = client.get(f"/ui/compare?a={a}&b={b}").text
    paired = text(html.split('id="compare-paired"')[1].split("</section>")[0])
    assert "On the 10 source conversations evaluated in both" in paired and "2,000 resamples, seed 20240601" in paired
    assert "20,240,601" not in text(html)  # the seed is a name, not a quantity
    assert "Metric A B B − A 95% CI p-value Significance Test" in paired
    assert "Issue rate 0.0% 100.0% +100.0 pp [+38.3, +100.0] pp 0.0020 significant * exact McNemar" in paired
    assert "Issue-free share 100.0% 0.0% -100.0 pp [-100.0, -38.3] pp" in paired and "Fabrication share 0.0% 100.0%" in paired
    assert "Issues per evaluated message 0.000 1.000 +1.000 [+1.000, +1.000]" in paired and "paired bootstrap" in paired
    assert f"Only in A (1, not paired): {ids[0]} ." in paired and f"Only in B (1, not paired): {ids[11]} ." in paired
    assert '<tr data-metric="issue_rate" class="significant">' in html
    assert "mean_difference" not in html and "{" not in paired  # no raw key/value dump
    conversations = text(html.split('id="compare-conversations"')[1].split("</section>")[0])
    assert f"In both 10 Only in A 1 {ids[0]} Only in B 1 {ids[11]}" in conversations
    same = text(client.get(f"/ui/compare?a={a}&b={a}").text)
    assert "Issue rate 0.0% 0.0% +0.0 pp [+0.0, +0.0] pp 1.0000 not significant" in same and "significant *" not in same


def test_conversations_browse_and_search(client, store) -> None:
    experiment_id = build_finished(store)
    body = text(client.get("/ui/conversations").text)
    assert "hw-weather-tools" in body and "40" not in body.split("conversations")[0]
    found = text(client.get("/ui/conversations?q=hw-ref").text)
    assert "1 conversation matches" in found and "hw-refusal" in found
    detail = client.get("/ui/conversations/hw-refusal").text
    assert "pass-through ☔" in text(detail) and f"/ui/experiments/{experiment_id}" in detail
    assert client.get("/ui/conversations/nope").status_code == 404


def form(fake_llm, ids, **extra):
    return {"name": "from the form", "model": "openai/fake-target", "api_base": fake_llm.api_base, "conversations": "chosen",
            "conversation_ids": ids, **extra}


def test_run_form_estimates_checks_and_starts_a_run(client, store, fake_llm) -> None:
    ids = import_fixture(store)[:3]
    estimate = client.post("/ui/runs/new", data=form(fake_llm, ids, action="estimate"))
    assert estimate.status_code == 200
    body = text(estimate.text)
    assert "Dry-run estimate" in body and "3 items: 3 target calls, 0 evaluator calls" in body
    assert fake_llm.request_count == 0 and client.get("/ui/live/experiments").json()["rows"] == []  # nothing stored or called
    assert 'value="from the form"' in estimate.text  # the form keeps what was typed

    bad = client.post("/ui/runs/new", data=form(fake_llm, ids, action="start", name="", model="nonexistent-model-xyz", api_base=""))
    assert bad.status_code == 400
    assert "Name: String should have at least 1 character" in text(bad.text)
    unknown = client.post("/ui/runs/new", data=form(fake_llm, ["nope"], action="start"))
    assert unknown.status_code == 400 and "Conversations: unknown conversation id(s): &#39;nope&#39;" in text(unknown.text)
    no_provider = client.post("/ui/runs/new", data=form(fake_llm, ids, action="estimate", model="nonexistent-model-xyz", api_base=""))
    assert no_provider.status_code == 400 and "litellm knows no provider for it" in text(no_provider.text)
    unpriced = client.post("/ui/runs/new", data=form(fake_llm, ids, action="start", max_cost_usd="1"))
    assert unpriced.status_code == 400 and "litellm has no price for openai/fake-target" in text(unpriced.text)
    far = client.post("/ui/runs/new", data=form(fake_llm, ids, action="start", api_base="http://203.0.113.9/v1"))
    assert far.status_code == 400 and "Target API base" in text(far.text)
    schema = client.post("/ui/runs/new", data=form(fake_llm, ids, action="estimate", output_schema="[{"))
    assert schema.status_code == 400 and "Output schema: not valid JSON" in text(schema.text)

    started = client.post("/ui/runs/new", data=form(fake_llm, ids, action="start"), follow_redirects=False)
    assert started.status_code == 303
    location = started.headers["location"]
    experiment_id = location.split("/")[-1].split("?")[0]
    deadline = time.monotonic() + 30
    while client.get(f"/ui/experiments/{experiment_id}/live").json()["row"]["open"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "3 of 3 done" in text(client.get(location).text) and fake_llm.request_count == 3


def test_resume_and_delete_with_confirmation(client, store, db_path) -> None:
    ids = import_fixture(store)[:2]
    experiment_id = new_experiment(store, ids, name="to resume", evaluator=None)
    page = client.get(f"/ui/experiments/{experiment_id}").text
    assert f'action="/ui/experiments/{experiment_id}/resume"' in page  # unfinished, nobody runs it
    resumed = client.post(f"/ui/experiments/{experiment_id}/resume", follow_redirects=False)
    assert resumed.status_code == 303 and resumed.headers["location"].endswith("?notice=resumed")
    deadline = time.monotonic() + 30
    while client.get(f"/ui/experiments/{experiment_id}/live").json()["row"]["open"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)

    confirm = text(client.get(f"/ui/experiments/{experiment_id}/delete").text)
    assert "Delete “to resume”?" in confirm and "The imported conversations stay" in confirm
    assert client.get(f"/ui/experiments/{experiment_id}").status_code == 200  # asking deleted nothing
    gone = client.post(f"/ui/experiments/{experiment_id}/delete", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/?notice=deleted"
    assert client.get(f"/ui/experiments/{experiment_id}").status_code == 404
    assert "The experiment was deleted." in client.get("/?notice=deleted").text
    other_site = client.post(f"/ui/experiments/{experiment_id}/delete", headers={"Origin": "http://evil.example"})
    assert other_site.status_code == 403


def test_delete_while_another_process_runs_it_answers_409_naming_the_runner(client, store) -> None:
    experiment_id = new_experiment(store, import_fixture(store)[:2], name="busy", evaluator=None)
    assert "A run by this server is stopped first; a run by another process must be stopped" in text(
        client.get(f"/ui/experiments/{experiment_id}/delete").text)
    with store.write() as session:  # the lease a live `run` in another terminal holds
        session.connection().exec_driver_sql(
            "INSERT INTO worker VALUES ('other', ?, 'elsewhere', 4242, '2026-01-01T00:00:00.000000Z', ?, 0)", (experiment_id, time.time())
        )
    confirm = text(client.get(f"/ui/experiments/{experiment_id}/delete").text)
    assert "Another process is running it now" in confirm and "stop that run first; until then deleting is refused" in confirm
    refused = client.post(f"/ui/experiments/{experiment_id}/delete", follow_redirects=False)
    assert refused.status_code == 409 and "<html" in refused.text
    assert f"experiment {experiment_id} is being run by 4242 on elsewhere (since 2026-01-01T00:00:00.000000Z)" in text(refused.text)
    assert client.get(f"/ui/experiments/{experiment_id}").status_code == 200  # nothing deleted


def test_token_sign_in_sets_a_strict_http_only_session_cookie(store) -> None:
    build_finished(store)
    with TestClient(create_app(store, token="s3cret"), follow_redirects=False) as client:
        first = client.get("/ui/compare?a=x")
        assert first.status_code == 303 and first.headers["location"] == "/ui/login?next=%2Fui%2Fcompare%3Fa%3Dx"
        assert client.get("/ui/login").status_code == 200 and client.get("/ui/static/ui.css").status_code == 200
        assert client.get("/v1/experiments").status_code == 401  # the API still answers 401, not a redirect
        wrong = client.post("/ui/login", data={"token": "nope", "next": "/"})
        assert wrong.status_code == 401 and "not the token this server was started with" in wrong.text and COOKIE not in wrong.headers.get("set-cookie", "")
        evil = client.post("/ui/login", data={"token": "s3cret", "next": "//evil.example/"})
        assert evil.status_code == 303 and evil.headers["location"] == "/"
        cookie = evil.headers["set-cookie"]
        session_id = cookie.split(";")[0].split("=", 1)[1]
        assert cookie.startswith(f"{COOKIE}=") and "s3cret" not in cookie and len(session_id) >= 40
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie and "expires" not in cookie.lower()
        home = client.get("/")
        assert home.status_code == 200 and 'action="/ui/logout"' in home.text  # the client keeps the cookie
        assert client.get("/v1/experiments").status_code == 200  # the cookie stands for the token on the API too
        again = client.post("/ui/login", data={"token": "s3cret", "next": "/"}).headers["set-cookie"]
        assert session_id not in again  # every sign-in gets its own random session
        client.cookies.clear()
        assert client.get("/v1/experiments", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        client.cookies.set(COOKIE, "forged")
        assert client.get("/").status_code == 303
        client.cookies.set(COOKIE, session_id)
        out = client.post("/ui/logout")
        assert out.status_code == 303 and out.headers["location"] == "/ui/login" and 'Max-Age=0' in out.headers["set-cookie"]
        client.cookies.set(COOKIE, session_id)  # the cookie kept after signing out no longer works
        assert client.get("/").status_code == 303 and client.get("/v1/experiments").status_code == 401
    with TestClient(create_app(store, token="s3cret"), follow_redirects=False) as restarted:
        restarted.cookies.set(COOKIE, again.split(";")[0].split("=", 1)[1])
        assert restarted.get("/").status_code == 303  # sessions live in the server process that started them
