"""Migration m006 (conversation tools and metadata): a store from before it opens with its data kept."""

import json
from pathlib import Path

from conftest import FIXTURES

from experiment_runner.ingest.conversations import load_conversation
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import migrations
from experiment_runner.store.database import open_store, schema_version

BEFORE = 5  # the version a store had before revision 0006 (was m006)


def test_a_store_from_before_m006_keeps_its_conversations_and_takes_tools(db_path: Path, tmp_path: Path) -> None:
    old = open_store(db_path, target_version=BEFORE)
    with old.write() as session:
        conn = session.connection()
        conn.exec_driver_sql("INSERT INTO conversation (id, type, content_hash, created_at) VALUES ('c1', 'source', 'h', '2026-01-01T00:00:00.000000Z')")
        conn.exec_driver_sql("INSERT INTO message (id, conversation_id, sequence_number, role, parts) "
                             """VALUES ('m1', 'c1', 0, 'user', '[{"type": "text", "content": "hello"}]')""")
    old.close()

    store = open_store(db_path)
    assert schema_version(store) == migrations.version_of(migrations.head())
    with store.read() as session:
        kept = load_conversation(session, "c1")
    assert kept == {"id": "c1", "type": "source",
                    "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "content": "hello"}], "sequence_number": 0, "generation": None}]}

    path = tmp_path / "tools.jsonl"
    tool = {"type": "function", "function": {"name": "f", "description": "does f", "parameters": {"type": "object"}}}
    path.write_text(json.dumps({"id": "c2", "messages": [{"role": "user", "content": "x"}], "tools": [tool], "metadata": {"k": "v"}}) + "\n")
    import_files(store, [str(path), str(FIXTURES / "handwritten.native.jsonl")])
    with store.read() as session:
        stored = load_conversation(session, "c2")
    assert stored["tools"] == [tool] and stored["metadata"] == {"k": "v"}
