"""A model litellm has no price for (issue 20, item 10): its cost reads `unknown` wherever a person reads it,
never `$0.0000`, while the export keeps the number its schema requires."""

import json
import re
from pathlib import Path

import pytest
from factories import priced_and_unpriced_runs

from experiment_runner.results.export import load_export_schema

ITEMS = 4


@pytest.fixture
def runs(run_cli, fake_llm, tmp_path: Path) -> tuple[str, str]:
    return priced_and_unpriced_runs(run_cli, fake_llm, tmp_path, ITEMS)


def test_show_and_list_say_unknown(run_cli, runs: tuple[str, str]) -> None:
    unpriced, priced = runs
    shown = run_cli("show", unpriced).stdout
    assert f"  cost                 unknown (no price known for the {ITEMS} completed replies)" in shown
    assert "$0.0000" not in shown
    assert re.search(r"  cost                 \$0\.\d{4} \(\$\d+\.\d{4} per 1k items\)\n", run_cli("show", priced).stdout)
    rows = {line.split()[0]: line for line in run_cli("list").stdout.splitlines()[2:]}
    assert " unknown " in rows[unpriced] and "$" not in rows[unpriced]
    assert re.search(r" \$0\.\d{4} ", rows[priced])


def test_compare_says_unknown(run_cli, runs: tuple[str, str]) -> None:
    unpriced, priced = runs
    text = run_cli("compare", unpriced, priced).stdout
    (row,) = [line for line in text.splitlines() if line.startswith("Cost per 1k items")]
    assert re.fullmatch(r"Cost per 1k items\s+unknown\s+\d+\.\d{4}\s+-", row), row
    assert "0.0000" not in row
    data = json.loads(run_cli("compare", unpriced, priced, "--json").stdout)
    (cost,) = [r for r in data["metrics"] if r["metric"] == "cost_per_1k"]
    assert cost["a"] is None and cost["b"] > 0 and cost["delta"] is None


def test_the_report_says_unknown(run_cli, runs: tuple[str, str], tmp_path: Path) -> None:
    unpriced, priced = runs
    page = (tmp_path / "r.html")
    assert run_cli("report", unpriced, "-o", page).exit_code == 0
    html = page.read_text(encoding="utf-8")
    assert '<div class="v">unknown</div><div class="k">Cost per 1k items</div>' in html
    assert "<td>Cost (USD)</td><td class=\"n\">unknown</td>" in html
    assert f"{ITEMS} of {ITEMS} completed replies have no known price" in html
    assert "$0.0000" not in html
    assert run_cli("report", unpriced, "--compare", priced, "-o", page).exit_code == 0
    side_by_side = page.read_text(encoding="utf-8")
    assert re.search(r"<td>Cost per 1k items</td><td class=\"n\">unknown</td><td class=\"n\">\$\d+\.\d{4}</td>", side_by_side)


def test_the_export_keeps_a_number_and_says_how_many_replies_had_no_price(run_cli, runs: tuple[str, str]) -> None:
    unpriced, priced = runs
    experiment = json.loads(run_cli("export", unpriced).stdout)["experiment"]
    assert experiment["metrics"]["cost_per_1k"] == 0 and "cost_per_1k" in load_export_schema()["properties"]["experiment"]["properties"]["metrics"]["required"]
    assert experiment["unpriced_items_count"] == experiment["completed_items_count"] == ITEMS
    priced_experiment = json.loads(run_cli("export", priced).stdout)["experiment"]
    assert priced_experiment["unpriced_items_count"] == 0 and priced_experiment["metrics"]["cost_per_1k"] > 0
