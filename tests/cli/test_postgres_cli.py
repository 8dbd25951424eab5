"""Every command on a PostgreSQL store (`--db postgresql://...`), one test each, and its errors in words.

One database is filled once for the module (the 40 sample conversations, two judged pass-through runs over
real HTTP to the fake server); each test then runs one command against it, as a user would.
"""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import query
from factories import RAGTRUTH, RAGTRUTH_GOLD, wait_until_serving
from postgres_server import create_database, drop_database

from experiment_runner.cli import cli
from experiment_runner.fixtures.fakellm import FakeLLM


def judge(conversations: list[dict[str, Any]], model: str, every: int) -> list[dict[str, Any]]:
    """A scripted judge that flags the first words of every `every`-th reply."""
    rules = []
    for n, conversation in enumerate(conversations):
        reply = conversation["messages"][-1]["parts"][0]["content"]
        found = [{"label": "Fabrication", "text": reply[:20], "message_part_index": 0, "explanation": "x"}] if n % every == 0 else []
        rules.append({"model": model, "match": reply, "reply": {"content": json.dumps({"annotations": found})}})
    return rules


class PgStore:
    """The module's filled database and a way to run the CLI on it."""

    def __init__(self, url: str, fake: FakeLLM):
        self.url, self.fake = url, fake
        self.ids: dict[str, str] = {}

    def cli(self, *args: object, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--db", self.url, *map(str, args)], input=input, catch_exceptions=False)

    def ok(self, *args: object) -> Result:
        result = self.cli(*args)
        assert result.exit_code == 0, result.output
        return result


@pytest.fixture(scope="module")
def pg(pg_server: Any) -> Iterator[PgStore]:
    name = f"cli_{uuid.uuid4().hex[:10]}"
    create_database(pg_server, name)
    conversations = [json.loads(line) for line in RAGTRUTH.read_text().splitlines()]
    with FakeLLM() as fake:
        fake.configure(scripts=judge(conversations, "judge-a", 2) + judge(conversations, "judge-b", 3))
        store = PgStore(pg_server.url(name), fake)
        assert len(store.ok("import", RAGTRUTH).stdout.split()) == 40
        for which in ("a", "b"):
            result = store.ok("run", "--name", which, "--model", "openai/target", "--pass-through", "--all",
                              "--evaluator-model", f"openai/judge-{which}", "--evaluator-api-base", fake.api_base)
            store.ids[which] = result.stdout.split()[-1]
        yield store
    drop_database(pg_server, name)


def test_import_and_conversations(pg: PgStore) -> None:
    pg.ok("import", RAGTRUTH)  # the same file again: nothing new
    assert query(pg.url, "SELECT count(*) FROM conversation WHERE type = 'source'") == [(40,)]
    listing = pg.ok("conversations").stdout
    assert len([line for line in listing.splitlines() if "user" in line]) >= 40, listing


def test_run_stores_items_results_and_evaluations(pg: PgStore) -> None:
    assert query(pg.url, "SELECT status, count(*) FROM item WHERE experiment_id = ? GROUP BY status", pg.ids["a"]) == [("completed", 40)]
    assert query(pg.url, "SELECT count(*) FROM annotation a JOIN evaluation e ON e.id = a.evaluation_id JOIN item i ON i.id = e.item_id"
                         " WHERE i.experiment_id = ?", pg.ids["a"]) == [(20,)]


def test_list_and_show(pg: PgStore) -> None:
    listed = pg.ok("list").stdout
    assert pg.ids["a"][:8] in listed and pg.ids["b"][:8] in listed
    shown = pg.ok("show", pg.ids["a"][:8]).stdout  # an id prefix resolves on PostgreSQL too
    assert "40" in shown and "completed" in shown


def test_export(pg: PgStore, tmp_path: Path) -> None:
    out = tmp_path / "a.json"
    pg.ok("export", pg.ids["a"], "-o", out)
    document = json.loads(out.read_text())
    assert len(document["items"]) == 40 and len(document["evaluations"]) == 40


def test_report(pg: PgStore, tmp_path: Path) -> None:
    page = tmp_path / "a.html"
    pg.ok("report", pg.ids["a"], "-o", page)
    assert "<html" in page.read_text().lower()


def test_compare_and_gate(pg: PgStore) -> None:
    compared = json.loads(pg.ok("compare", pg.ids["b"], pg.ids["a"], "--json").stdout)
    assert compared
    gate = pg.cli("gate", pg.ids["b"], "--baseline", pg.ids["a"], "--max-increase", "issue_rate=1")
    assert gate.exit_code == 0, gate.output


def test_score(pg: PgStore) -> None:
    scored = json.loads(pg.ok("score", pg.ids["a"], "--gold", RAGTRUTH_GOLD, "--json").stdout)
    assert scored["experiment_id"] == pg.ids["a"]
    against = json.loads(pg.ok("score", pg.ids["b"], "--against", pg.ids["a"], "--json").stdout)
    assert against["scored"] == 40


def test_reevaluate_and_resume(pg: PgStore) -> None:
    again = pg.ok("reevaluate", pg.ids["a"], "--evaluator-model", "openai/judge-b", "--evaluator-api-base", pg.fake.api_base)
    new = again.stdout.split()[-1]
    assert query(pg.url, "SELECT count(*) FROM evaluation e JOIN item i ON i.id = e.item_id WHERE i.experiment_id = ?", new) == [(40,)]
    query(pg.url, "UPDATE item SET status = 'pending' WHERE experiment_id = ? AND position < 3", new)
    query(pg.url, "UPDATE experiment SET completed_at = NULL WHERE id = ?", new)
    resumed = pg.ok("resume", new)
    assert query(pg.url, "SELECT status, count(*) FROM item WHERE experiment_id = ? GROUP BY status", new) == [("completed", 40)], resumed.output


def test_cache_stats_and_clear(pg: PgStore) -> None:
    stats = pg.ok("cache", "stats").stdout  # the judges' replies, and the hits of the re-evaluation by judge-b
    assert "80 cached replies" in stats and "openai/judge-b" in stats, stats
    pg.ok("cache", "clear")
    assert pg.ok("cache", "stats").stdout.strip() == "The response cache is empty."


def test_serve_answers_from_the_store(pg: PgStore) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "experiment_runner", "--db", pg.url, "serve", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(server, f"http://127.0.0.1:{port}/v1/experiments")
        import httpx

        listed = httpx.get(f"http://127.0.0.1:{port}/v1/experiments", timeout=10).json()
        assert {pg.ids["a"], pg.ids["b"]} <= {e["id"] for e in listed["items"]}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_delete_last(pg: PgStore) -> None:
    assert pg.ok("delete", pg.ids["b"]).stdout.startswith(f"Deleted experiment {pg.ids['b']}")
    assert query(pg.url, "SELECT count(*) FROM experiment WHERE id = ?", pg.ids["b"]) == [(0,)]
    assert pg.cli("show", pg.ids["b"]).exit_code == 2
