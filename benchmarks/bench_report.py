"""Build time and file size of `experiment-runner report ID` for a 5,000-item experiment.

Builds a store by bulk inserts: the 40 RAGTruth sample conversations repeated to 5,000 items (prompts of
2-4 KB, real replies), each with its pass-through result, an evaluation carrying the sample's gold spans,
a latency for the histogram, and one failed item in 50. Then times `write_report` in process (reading
the export, rendering, writing) and prints the time and size beside their targets. A second run renders
the same experiment side by side with itself (`--compare`). Run: `python benchmarks/bench_report.py [N]`.
"""

import json
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert

import experiment_runner  # noqa: F401
from experiment_runner.report.html import write_report
from experiment_runner.store import Store, open_store
from experiment_runner.store.tables import Annotation, Conversation, Evaluation, Experiment, Item, Message
from experiment_runner.store.timeutil import now

ROOT = Path(__file__).resolve().parent.parent / "fixtures"
TARGET_SECONDS = 10.0
TARGET_MB = 30.0


def _sample() -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """The RAGTruth conversations with their gold annotations."""
    gold = {}
    for line in (ROOT / "ragtruth-sample.gold.jsonl").read_text().splitlines():
        row = json.loads(line)
        gold[row["conversation_id"]] = row["annotations"]
    lines = (ROOT / "ragtruth-sample.conversations.jsonl").read_text().splitlines()
    return [(c, gold.get(c["id"], [])) for c in map(json.loads, lines)]


def _conversation(cid: str, kind: str, messages: list[dict[str, Any]], stamp: str) -> tuple[dict, list[dict]]:
    rows = [
        {"id": str(uuid.uuid4()), "conversation_id": cid, "sequence_number": i, "role": m["role"],
         "parts": m["parts"], "generation": m.get("generation")}
        for i, m in enumerate(messages)
    ]
    return {"id": cid, "type": kind, "content_hash": cid, "created_at": stamp}, rows


def build(store: Store, n: int) -> str:
    """A finished pass-through experiment of `n` items; its id."""
    rng, stamp, sample = random.Random(3), now(), _sample()
    experiment_id = str(uuid.uuid4())
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ("conv", "msg", "item", "eval", "ann")}
    for position in range(n):
        conversation, gold = sample[position % len(sample)]
        messages = [dict(m) for m in conversation["messages"]]
        messages[-1]["generation"] = {**(messages[-1].get("generation") or {}), "latency_ms": rng.lognormvariate(6.8, 0.4),
                                      "input_tokens": rng.randint(600, 1200), "output_tokens": rng.randint(40, 300)}
        source_id, result_id, item_id = f"rt-{position:05d}", str(uuid.uuid4()), str(uuid.uuid4())
        failed = position % 50 == 49
        for cid, kind in [(source_id, "source")] + ([] if failed else [(result_id, "result")]):
            conv, msgs = _conversation(cid, kind, messages, stamp)
            rows["conv"].append(conv)
            rows["msg"] += msgs
        rows["item"].append({
            "id": item_id, "experiment_id": experiment_id, "position": position, "source_conversation_id": source_id,
            "result_conversation_id": None if failed else result_id, "status": "failed" if failed else "completed",
            "error_message": "model call failed: HTTP 500" if failed else None, "evaluations_expected": 1,
            "created_at": stamp, "updated_at": stamp,
        })
        if failed:
            continue
        evaluation_id = str(uuid.uuid4())
        rows["eval"].append({
            "id": evaluation_id, "item_id": item_id, "message_id": rows["msg"][-1]["id"], "status": "completed",
            "model": "openai/judge", "created_at": stamp,
        })
        rows["ann"] += [
            {"id": str(uuid.uuid4()), "evaluation_id": evaluation_id, "position": k, "label": a["label"],
             "text": a["text"], "explanation": f"RAGTruth: {a['source_label']}", "message_part_index": 0,
             "start_offset": a["start_offset"], "end_offset": a["end_offset"]}
            for k, a in enumerate(gold)
        ]
    with store.write() as session:
        session.execute(insert(Experiment), [{
            "id": experiment_id, "name": f"bench {n}", "model": "openai/target", "pass_through": True,
            "conversation_ids": [r["source_conversation_id"] for r in rows["item"]], "created_at": stamp,
            "completed_at": stamp, "evaluator_model": "openai/judge",
        }])
        for model, key in ((Conversation, "conv"), (Message, "msg"), (Item, "item"), (Evaluation, "eval"), (Annotation, "ann")):
            for start in range(0, len(rows[key]), 5000):
                session.execute(insert(model), rows[key][start : start + 5000])
    return experiment_id


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5_000
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "bench.db")
        started = time.perf_counter()
        experiment_id = build(store, n)
        print(f"built {n:,} items in {time.perf_counter() - started:.1f} s (not part of the figures below)")
        for label, compare in (("report", None), ("report --compare (same experiment twice)", experiment_id)):
            path = Path(tmp) / "report.html"
            started = time.perf_counter()
            write_report(store, experiment_id, path, compare_id=compare)
            seconds, mb = time.perf_counter() - started, path.stat().st_size / 1e6
            print(f"{label}: {seconds:.2f} s (target < {TARGET_SECONDS:.0f} s), "
                  f"{mb:.1f} MB (target < {TARGET_MB:.0f} MB), {mb * 1e3 / n:.1f} KB per item")
        store.close()


if __name__ == "__main__":
    main()
