"""Write `vN.sql`: a small store at each shipped schema version (1..7), as a plain SQLite dump.

Run once, at commit d1c7302 (the last release whose migrations were hand-written DDL in
`store/migrations.py`, recorded in `schema_migrations`), with `python tests/data/stores/make_stores.py`.
Each store was created by that release's own `open_store(path, target_version=N)`; the same rows are then
inserted into every store, each with the columns its version has. The dumps are kept as they were written:
they are what an old user's file holds, and `tests/store/test_old_stores.py` migrates each to head.
It cannot be run again on a later commit (the old migrations are gone); it is kept to say how the files were made.
"""

import sqlite3
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
T = "2026-01-02T03:04:05.000000Z"

# table -> rows; a column a version lacks is left out of its insert.
ROWS: dict[str, list[dict[str, object]]] = {
    "conversation": [
        {"id": "src-1", "type": "source", "content_hash": "h1", "created_at": T,
         "tools": '[{"type": "function", "function": {"name": "lookup"}}]', "metadata": '{"team": "a"}'},
        {"id": "src-2", "type": "source", "content_hash": "h2", "created_at": T},
        {"id": "res-1", "type": "result", "content_hash": "h3", "created_at": T, "experiment_id": "exp-1"},
    ],
    "message": [
        {"id": "m1", "conversation_id": "src-1", "sequence_number": 0, "role": "user", "parts": '[{"type": "text", "content": "hi"}]'},
        {"id": "m2", "conversation_id": "src-1", "sequence_number": 1, "role": "assistant", "parts": '[{"type": "text", "content": "hello"}]',
         "generation": '{"model": "m", "cost_usd": 0.5}'},
        {"id": "m3", "conversation_id": "src-2", "sequence_number": 0, "role": "user", "parts": '[{"type": "text", "content": "yo"}]'},
        {"id": "m4", "conversation_id": "res-1", "sequence_number": 0, "role": "user", "parts": '[{"type": "text", "content": "hi"}]'},
        {"id": "m5", "conversation_id": "res-1", "sequence_number": 1, "role": "assistant", "parts": '[{"type": "text", "content": "Paris is in Spain"}]',
         "generation": '{"model": "target", "cost_usd": 0.25, "cache_hit": true, "cost_saved_usd": 0.25}'},
    ],
    "experiment": [
        {"id": "exp-1", "name": "first", "model": "target", "pass_through": 0, "conversation_ids": '["src-1", "src-2"]',
         "created_at": T, "completed_at": None, "api_base": "http://127.0.0.1:9/v1", "evaluator_model": "judge",
         "labels": '{"labels": [{"name": "fact", "description": "A claim the context contradicts"}]}', "structured_output": '{"target": {"setting": "auto"}}',
         "stop_reason": "interrupted", "stop_detail": "Ctrl-C", "stopped_at": T, "runner": "cli", "max_cost_usd": 2.5,
         "setting_changes": "[]"},
    ],
    "item": [
        {"id": "it-1", "experiment_id": "exp-1", "position": 0, "source_conversation_id": "src-1", "result_conversation_id": "res-1",
         "status": "completed", "evaluations_expected": 1, "created_at": T, "updated_at": T},
        {"id": "it-2", "experiment_id": "exp-1", "position": 1, "source_conversation_id": "src-2", "status": "pending",
         "evaluations_expected": 0, "created_at": T, "updated_at": T},
    ],
    "evaluation": [
        {"id": "ev-1", "item_id": "it-1", "message_id": "m5", "status": "completed", "model": "judge", "input_tokens": 10,
         "output_tokens": 5, "total_duration_ms": 12.5, "created_at": T, "dropped": '{"not_found": 1}', "cost_usd": 0.01,
         "response_format": "json_schema", "cached_calls": 1, "cost_saved_usd": 0.01},
    ],
    "annotation": [
        {"id": "an-1", "evaluation_id": "ev-1", "position": 0, "label": "fact", "text": "Spain", "explanation": "wrong",
         "message_part_index": 0, "start_offset": 12, "end_offset": 17},
    ],
    "run_lease": [
        {"experiment_id": "exp-1", "owner": "o1", "host": "h", "pid": 1, "acquired_at": T, "heartbeat_at": 1.5},
    ],
    "response_cache": [
        {"key": "k1", "model": "target", "parts": '[{"type": "text", "content": "cached"}]', "generation": '{"cost_usd": 0.25}',
         "duration_ms": 3.0, "cost_usd": 0.25, "created_at": T, "hits": 2, "saved_usd": 0.5},
    ],
    "batch_job": [
        {"id": "b1", "experiment_id": "exp-1", "role": "target", "model": "target", "provider": "openai", "provider_batch_id": "pb",
         "input_file_id": "f", "status": "in_progress", "request_count": 1, "created_at": T, "updated_at": T},
    ],
    "batch_request": [
        {"batch_id": "b1", "custom_id": "c1", "item_id": "it-2", "mode": "json_schema", "cache_key": "k2", "body": '{"model": "target"}'},
    ],
}


def make(version: int) -> str:
    from experiment_runner.store import open_store

    path = HERE / f"v{version}.db"
    path.unlink(missing_ok=True)
    open_store(path, target_version=version).close()
    conn = sqlite3.connect(path)
    for table, rows in ROWS.items():
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for row in rows:
            kept = {k: v for k, v in row.items() if k in columns}
            if kept:
                conn.execute(f"INSERT INTO {table} ({', '.join(kept)}) VALUES ({', '.join('?' for _ in kept)})", list(kept.values()))
    conn.commit()
    dump = "\n".join(conn.iterdump()) + "\n"
    conn.close()
    path.unlink()
    return dump


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[2]))
    for number in range(1, 8):
        (HERE / f"v{number}.sql").write_text(make(number), encoding="utf-8")
