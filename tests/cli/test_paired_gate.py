"""Paired `compare` and `gate` (issue 24) on the bundled sample, judged over real HTTP by scripted judges.

Judge A quotes the human labels. Judge B does too, and also flags one sentence in 10 of the 16 replies the
humans found clean: 10 more replies with an issue. Judge C is judge A again: identical annotations.
"""

import json
import re
from pathlib import Path
from typing import Any

import pytest
from factories import RAGTRUTH, RAGTRUTH_GOLD

EXTRA = 10


def judge_scripts() -> list[dict[str, Any]]:
    """Scripts for judges `judge-a`/`judge-c` (the human labels) and `judge-b` (those plus 10 more flagged replies)."""
    conversations = [json.loads(line) for line in RAGTRUTH.read_text().splitlines()]
    gold = {g["conversation_id"]: g["annotations"] for g in map(json.loads, RAGTRUTH_GOLD.read_text().splitlines())}
    scripts, extra = [], 0
    for conversation in conversations:
        reply = conversation["messages"][-1]["parts"][0]["content"]
        quotes = [{"label": a["label"], "text": a["text"], "message_part_index": 0, "explanation": "human"} for a in gold[conversation["id"]]]
        more = list(quotes)
        if not quotes and extra < EXTRA:
            extra += 1
            more.append({"label": "Fabrication", "text": reply[:30], "message_part_index": 0, "explanation": "judge B"})
        for model, found in (("judge-a", quotes), ("judge-c", quotes), ("judge-b", more)):
            scripts.append({"model": model, "match": reply, "reply": {"content": json.dumps({"annotations": found})}})
    assert extra == EXTRA
    return scripts


@pytest.fixture
def runs(run_cli, fake_llm) -> dict[str, str]:
    """Three pass-through runs of the 40 sample replies: judged by A, B and C."""
    fake_llm.configure(scripts=judge_scripts())
    assert run_cli("import", RAGTRUTH).exit_code == 0
    ids = {}
    for judge in ("a", "b", "c"):
        result = run_cli("run", "--name", judge, "--model", "openai/target", "--pass-through", "--all",
                         "--evaluator-model", f"openai/judge-{judge}", "--evaluator-api-base", fake_llm.api_base)
        assert result.exit_code == 0, result.output
        ids[judge] = result.stdout.split()[-1]
    return ids


def paired(result: Any) -> dict[str, dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return {row["metric"]: row for row in json.loads(result.stdout)["paired"]["metrics"]}


def test_ten_more_replies_with_an_issue_are_significant_and_fail_the_gate(run_cli, runs, tmp_path: Path) -> None:
    rows = paired(run_cli("compare", runs["a"], runs["b"], "--json"))
    rate = rows["issue_rate"]
    assert set(rate) == {"metric", "a", "b", "difference", "ci_low", "ci_high", "p_value", "significant", "method"}
    assert (rate["a"], rate["b"], rate["difference"]) == (24 / 40, 34 / 40, 0.25)
    assert rate["p_value"] == 0.001953125 and rate["significant"] is True  # exact McNemar: 10 discordant, all one way
    assert rate["ci_low"] == pytest.approx(0.25 * (2 * 0.025 ** 0.1 - 1)) and rate["ci_high"] == pytest.approx(0.25)
    assert rows["issue_free_share"]["difference"] == -0.25 and rows["issue_free_share"]["significant"]
    assert rows["label:Fabrication"]["significant"] and not rows["label:Context Misattribution"]["significant"]
    assert rows["avg_issues_per_evaluated_message"]["difference"] == 0.25 and rows["avg_issues_per_evaluated_message"]["significant"]
    for key, v in rows.items():
        print(f"compare A B: {key} {v['difference']:+.4f} [{v['ci_low']:+.4f}, {v['ci_high']:+.4f}] p={v['p_value']:.6f} {v['significant']}")

    text = run_cli("compare", runs["a"], runs["b"]).stdout
    line = next(x for x in text.splitlines() if x.startswith("issue rate (%)") and "[" in x)
    assert re.search(r"60\.0\s+85\.0\s+\+25\.0\s+\[\+9\.6, \+25\.0\]\s+0\.0020\s+\*$", line), line

    page = run_cli("report", runs["a"], "--compare", runs["b"], "-o", tmp_path / "ab.html")
    html = (tmp_path / "ab.html").read_text()
    assert page.exit_code == 0 and 'id="compare-paired"' in html
    assert '<tr data-metric="issue_rate" class="significant">' in html
    assert '<tr data-metric="label:Context Misattribution" class="">' in html and "not significant" in html

    junit = tmp_path / "gate.xml"
    gate = run_cli("gate", runs["b"], "--baseline", runs["a"], "--max-increase", "issue_rate=0", "--significant", "--junit", junit)
    assert gate.exit_code == 1
    print("gate B --baseline A:", gate.stdout)
    assert "FAIL  max-increase issue_rate=0: paired increase +0.25 > 0 (95% CI [+0.09575, +0.25], p=0.001953)" in gate.stdout
    xml = junit.read_text()
    assert 'tests="1" failures="1"' in xml and "<failure" in xml and 'name="max-increase issue_rate=0"' in xml


def test_identical_annotations_are_not_significant_and_pass_the_gate(run_cli, runs, tmp_path: Path) -> None:
    rows = paired(run_cli("compare", runs["a"], runs["c"], "--json"))
    assert not any(row["significant"] for row in rows.values())
    assert all(row["difference"] == 0 and row["p_value"] == 1.0 for row in rows.values())
    table = run_cli("compare", runs["a"], runs["c"]).stdout.split("Paired on")[1].splitlines()[3:]
    assert table and not any(line.rstrip().endswith("*") for line in table)
    gate = run_cli("gate", runs["c"], "--baseline", runs["a"], "--max-increase", "issue_rate=0", "--significant",
                   "--format", "markdown", "--junit", tmp_path / "ok.xml")
    assert gate.exit_code == 0, gate.output
    assert "| ✅ pass | `max-increase issue_rate=0` | 0 | 0 | [+0, +0] | 1 |" in gate.stdout
    run_cli("report", runs["a"], "--compare", runs["c"], "-o", tmp_path / "ac.html")
    html = (tmp_path / "ac.html").read_text()
    assert 'id="compare-paired"' in html and 'class="significant"' not in html
    assert 'failures="0"' in (tmp_path / "ok.xml").read_text()


def test_without_significant_any_increase_fails_and_max_checks_the_value(run_cli, runs) -> None:
    gate = run_cli("gate", runs["b"], "--max", "issue_rate=0.9", "--max", "label:Fabrication=0.3", "--format", "json")
    assert gate.exit_code == 1
    checks = {c["name"]: c for c in json.loads(gate.stdout)["checks"]}
    assert checks["max issue_rate=0.9"]["passed"] and checks["max issue_rate=0.9"]["value"] == 0.85
    fabrication = checks["max label:Fabrication=0.3"]
    assert not fabrication["passed"] and fabrication["value"] > 0.3
    assert run_cli("gate", runs["b"], "--baseline", runs["a"], "--max-increase", "issue_rate=0.3").exit_code == 0
    assert run_cli("gate", runs["b"], "--baseline", runs["a"], "--max-increase", "avg_issues_per_evaluated_message=0.1").exit_code == 1


BAD_USAGE = [
    (["--max", "issue_rate"], "--max 'issue_rate': expected METRIC=VALUE"),
    (["--max", "issue_rat=0.1"], "unknown metric 'issue_rat'"),
    (["--max", "issue_rate=lots"], "'lots' is not a number"),
    (["--max-increase", "issue_rate=0"], "--max-increase needs --baseline ID"),
    (["--max", "issue_rate=1", "--significant"], "--significant needs --baseline ID"),
    ([], "give at least one condition"),
]


def test_bad_usage_exits_2_with_one_line(run_cli, runs) -> None:
    for args, message in BAD_USAGE:
        result = run_cli("gate", runs["a"], *args)
        assert result.exit_code == 2 and result.stderr.startswith("Error: ") and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1


def test_unknown_experiment_exits_2(run_cli, runs) -> None:
    result = run_cli("gate", "nope", "--max", "issue_rate=1")
    assert result.exit_code == 2 and result.stderr.startswith("Error: ")


def test_the_compare_page_marks_significance_in_a_browser(run_cli, runs, tmp_path: Path) -> None:
    """Headless Chromium renders the compare page; the paired table's issue-rate row says significant."""
    import shutil
    import subprocess

    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    run_cli("report", runs["a"], "--compare", runs["b"], "-o", tmp_path / "ab.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    out = subprocess.run([binary, *flags, "--dump-dom", (tmp_path / "ab.html").resolve().as_uri()],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    row = re.search(r'<tr data-metric="issue_rate" class="significant">(.*?)</tr>', out.stdout, re.S)
    assert row is not None and '<b class="up">significant</b>' in row.group(1) and "0.0020" in row.group(1)
    screenshot = tmp_path / "compare.png"  # the page renders to an image too (looked at by hand while building it)
    subprocess.run([binary, *flags, f"--screenshot={screenshot}", "--window-size=1400,1400", (tmp_path / "ab.html").resolve().as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
