"""The HTML report (issue 8): from real runs through the engine, self-contained, escaped, compared, large."""

import base64
import copy
import hashlib
import html
import json
import re

import pytest
from conftest import FIXTURES
from factories import RAGTRUTH, RAGTRUTH_GOLD, SpanSpec, finish_experiment, import_fixture, new_experiment

from experiment_runner.engine.experiments import create_experiment
from experiment_runner.engine.run import run_experiment
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.errors import NotFoundError
from experiment_runner.evaluation.evaluator import DEFAULT_LABELS
from experiment_runner.ingest.importing import import_conversations, import_files
from experiment_runner.report.html import render_report, write_report
from experiment_runner.results.documents import ExportDocument, ExportEvaluation, ExportItem
from experiment_runner.results.export import export_document

XSS_REPLY = "Sure! <script>alert(1)</script> The answer is 42, \"quoted\" & 'single' 🎉 東京."
XSS = {"id": "xss", "messages": [
    {"role": "user", "parts": [{"type": "text", "content": "<img src=x onerror=alert(2)> What is it?"}]},
    {"role": "assistant", "parts": [{"type": "text", "content": XSS_REPLY}]},
]}


def ann(label: str, text: str, explanation: str = "", part: int = 0, tool: str | None = None,
        param: str | None = None) -> dict:
    return {"label": label, "text": text, "explanation": explanation or f"{label}: {text}",
            "message_part_index": part, "tool_name": tool, "parameter_name": param}


def judge(match: str, *annotations: dict, content: str | None = None) -> dict:
    body = content if content is not None else json.dumps({"annotations": list(annotations)})
    return {"model": "judge", "match": match, "reply": {"content": body}}


JUDGE_A = [
    judge("70% chance of rain", ann("Fabrication", "70% chance", 'The tool said "0.7" — <b>not</b> a percentage')),
    judge("Booking it now.", ann("Fabrication", "6", "The user asked for four.", 1, "book_table", "party_size"),
          ann("Context Misattribution", "Booking it now.")),
    judge("It arrives at 17:15.", content="not json at all"),
    judge("The answer is 42", ann("Fabrication", "<script>alert(1)</script>", "<i>injected</i> & 'quoted'"),
          ann("Reasoning Error", "The answer is 42"), ann("Custom Label", "🎉 東京")),
]


def run(store, fake_llm, ids: list[str], scripts: list[dict], name: str, **spec) -> str:
    """Create and run an experiment through the engine, the fake server as target and evaluator."""
    fake_llm.configure(scripts=scripts)
    spec.setdefault("pass_through", True)
    experiment_id = create_experiment(store, ExperimentSpec(
        name=name, model="openai/target", conversation_ids=ids, evaluator_model="openai/judge", evaluator_api_base=fake_llm.api_base, **spec))
    run_experiment(store, experiment_id)
    return experiment_id


@pytest.fixture
def experiment(store, fake_llm) -> str:
    """Pass-through of the 4 hand-written conversations, the XSS one and 2 RAGTruth replies, judged."""
    ids = import_files(store, [str(FIXTURES / "handwritten.native.jsonl")]).ids
    ids += import_conversations(store, [XSS]).ids + import_fixture(store, RAGTRUTH)[:2]
    labels = {"labels": [*DEFAULT_LABELS, {"name": "Custom Label", "description": "A project's own label."}]}
    return run(store, fake_llm, ids, JUDGE_A, "report <A> ☔", labels=labels)


def group_1(pattern: str, text: str, flags: int = 0) -> str:
    """The first group of `pattern`'s first match in `text` (the test fails when there is none)."""
    match = re.search(pattern, text, flags)
    assert match, pattern
    return match.group(1)


def blob(page: str) -> dict:
    """The embedded data: {"per_page", "items": [{"h": card HTML, "m": filter facts}]}."""
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.DOTALL)
    assert match
    assert "</" not in match.group(1) and "<!--" not in match.group(1)
    return json.loads(match.group(1))


def cards(page: str) -> dict[str, dict]:
    """The embedded items by source conversation id."""
    return {group_1(r'data-source="([^"]*)"', item["h"]): item for item in blob(page)["items"]}


def marked_text(card: str, annotation_id: str) -> str:
    """The text of every mark that carries an annotation, joined (marks are flat and in order)."""
    marks = re.findall(r'<mark [^>]*data-ann="([^"]*)"[^>]*>(.*?)</mark>', card, re.DOTALL)
    return "".join(html.unescape(text) for ids, text in marks if annotation_id in ids.split())


def test_every_annotation_is_highlighted_at_its_offsets(store, experiment, tmp_path, run_cli) -> None:
    path = tmp_path / "r.html"
    result = run_cli("report", experiment, "-o", path)
    assert result.exit_code == 0 and result.stdout.strip() == str(path)
    by_source = cards(path.read_text(encoding="utf-8"))
    document = export_document(store, experiment)
    annotations = 0
    for item in document["items"]:
        result, source_id = item["result_conversation"], item["source_conversation"]["id"]
        assert result is not None and source_id is not None
        reply = result["messages"][-1]
        card = by_source[source_id]["h"]
        for a in document["evaluations"][reply["id"]]["annotations"]:
            assert marked_text(card, a["id"]) == a["text"], a
            annotations += 1
    assert annotations == 6
    booking = by_source["hw-booking-args"]["h"]
    assert re.search(r'<th>party_size</th><td class="txt"><mark [^>]*data-labels="Fabrication"[^>]*>6</mark></td>', booking)
    assert by_source["xss"]["m"] == {"l": ["Custom Label", "Fabrication", "Reasoning Error"], "n": 3, "f": 0, "c": 0}
    math = by_source["hw-reasoning-math"]
    assert math["m"]["f"] == 1 and "evaluation failed" in math["h"] and "unusable" in math["h"]


def test_report_is_self_contained_and_escapes_the_data(store, experiment, tmp_path) -> None:
    page = write_report(store, experiment, tmp_path / "r.html").read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"@import|url\(|<link|<iframe|<img|<object|<embed", page, re.IGNORECASE)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.DOTALL)
    assert [attrs for attrs, _ in scripts] == [' type="application/json" id="report-data"', ""]
    digest = base64.b64encode(hashlib.sha256(scripts[1][1].encode()).digest()).decode()
    csp = group_1(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', page)
    assert "default-src 'none'" in csp and f"script-src 'sha256-{digest}'" in csp
    assert "alert(1)</script>" not in page and "<img src=x" not in page and "<b>not</b>" not in page
    card = cards(page)["xss"]["h"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</mark>" in card
    assert "&lt;img src=x onerror=alert(2)&gt;" in card  # the history too
    assert "<script" not in card and "<i>" not in card and "&lt;i&gt;injected&lt;/i&gt; &amp; &#x27;quoted&#x27;" in card
    assert "report &lt;A&gt; ☔" in page  # the name, in the title and the header


def test_header_metrics_and_charts(store, experiment, tmp_path) -> None:
    page = write_report(store, experiment, tmp_path / "r.html").read_text(encoding="utf-8")
    for text in ("<code>openai/target</code>", "pass-through (stored replies", "<code>openai/judge</code>",
                 "as in each conversation", "Issue rate", "Cost per 1k items", "Response latency", "Tokens and cost"):
        assert text in page, text
    for label in ("Fabrication", "Context Misattribution", "Reasoning Error", "Incorrect Refusal", "Custom Label"):
        assert f'<option value="{label}">' in page
    metrics = export_document(store, experiment)["experiment"]["metrics"]
    assert f"{metrics['issue_rate'] * 100:.1f}%" in page
    bars = group_1(r'id="label-bars">(.*?)</div>\s*(?:<h3|</div>)', page, re.DOTALL)
    assert ">Fabrication<" in bars and "3 · 50%" in bars and "1 · 17%" in bars
    histogram = group_1(r'<div class="hist" id="latency">(.*?)</div>', page, re.DOTALL)
    assert histogram.count("<span") == 20 and "height:100.0%" in histogram
    assert "3 replies with a latency" in page  # the hand-written replies that report one
    assert '<td><code>book_table</code></td><td><code>party_size</code></td><td class="n">1</td>' in page


def test_compare_report_shows_both_replies_side_by_side(store, fake_llm, experiment, tmp_path) -> None:
    ids = export_document(store, experiment)["experiment"]["conversation_ids"]
    scripts = [
        {"model": "target", "match": "umbrella in Lisbon", "reply": {"status": 500}},
        judge("Simulated reply to: Book a table", ann("Incorrect Refusal", "Simulated reply")),
    ]
    b = run(store, fake_llm, ids[:3], scripts, "replay B", pass_through=False, api_base=fake_llm.api_base)
    page = write_report(store, experiment, tmp_path / "c.html", compare_id=b).read_text(encoding="utf-8")
    assert "report &lt;A&gt; ☔</h1>" not in page and "vs</span> replay B</h1>" in page
    assert 'id="compare-metrics"' in page and 'id="f-changed"' in page
    assert "3 source conversations in both · 4 only in A · 0 only in B" in page
    assert re.search(r'<a href="#q=hw-booking-args">hw-booking-args</a></td><td class="n">2</td><td class="n">1</td>', page)
    by_source = cards(page)
    weather = by_source["hw-weather-tools"]
    assert weather["h"].count('<section class="side">') == 2 and "scripted failure (HTTP 500)" in weather["h"]
    assert ">70% chance</mark>" in weather["h"] and weather["m"]["f"] == 1
    booking = by_source["hw-booking-args"]
    assert booking["m"] == {"l": ["Context Misattribution", "Fabrication", "Incorrect Refusal"], "n": 3, "f": 0, "c": 1}
    assert "Not in this experiment." in by_source["xss"]["h"]


def test_cli_default_file_name_and_errors(store, experiment, run_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_cli("report", experiment)
    assert result.exit_code == 0 and result.stdout == f"report-{experiment[:8]}.html\n"
    assert (tmp_path / f"report-{experiment[:8]}.html").stat().st_size > 10_000
    for args in (("report", "nope"), ("report", experiment, "--compare", "nope"),
                 ("report", experiment, "-o", tmp_path / "missing" / "r.html")):
        result = run_cli(*args)
        assert result.exit_code == 2 and result.stderr.startswith("Error: "), args
    with pytest.raises(NotFoundError):
        write_report(store, "nope", tmp_path / "x.html")


def _synthetic(document: ExportDocument, n: int) -> ExportDocument:
    """`document` with its items (and their evaluations) repeated to `n`, each with fresh ids."""
    items: list[ExportItem] = []
    evaluations: dict[str, ExportEvaluation] = {}
    for i in range(n):
        item = copy.deepcopy(document["items"][i % len(document["items"])])
        item["id"] = f"item-{i}"
        item["source_conversation"]["id"] = f"conv-{i}"
        messages = item["result_conversation"]["messages"] if item["result_conversation"] else []
        for message in messages:
            old, message["id"] = message["id"], f"m{i}-{message['sequence_number']}"
            if old in document["evaluations"]:
                evaluation = copy.deepcopy(document["evaluations"][old])
                for k, a in enumerate(evaluation["annotations"]):
                    a["id"] = f"a{i}-{k}"
                evaluations[message["id"]] = evaluation
        items.append(item)
    return {**document, "items": items, "evaluations": evaluations}


def test_a_5000_item_report_builds_and_stays_small(store) -> None:
    """How fast it builds is benchmarks/bench_report.py's business: a wall-clock bound here would flake on a busy machine."""
    ids = import_fixture(store, RAGTRUTH)
    gold = {g["conversation_id"]: g["annotations"] for g in map(json.loads, RAGTRUTH_GOLD.read_text().splitlines())}
    experiment_id = new_experiment(store, ids)
    finish_experiment(store, experiment_id, failed={ids[5]: "model call failed: HTTP 500"}, spans={
        cid: [SpanSpec(a["label"], a["start_offset"], a["end_offset"]) for a in spans] for cid, spans in gold.items()
    })
    document = _synthetic(export_document(store, experiment_id), 5000)
    page = render_report(document)
    size = len(page.encode("utf-8"))
    assert size < 30e6, f"{size / 1e6:.1f} MB"
    data = blob(page)
    assert data["per_page"] == 50 and len(data["items"]) == 5000
    assert sum(1 for item in data["items"] if item["m"]["f"]) == 125
