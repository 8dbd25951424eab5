"""Time and memory of `experiment-runner export ID -o FILE` for 1,000 and 10,000 items.

Builds one store with two finished pass-through experiments (1,000 and 10,000 items) by bulk inserts:
each item has a 2-message source conversation of about 1.5 KB, its result copy, and an evaluation with
1 or 2 annotations (in a child process: on Linux a child inherits its parent's peak RSS). Then, in a
fresh subprocess per size, it times `write_export` in process (interpreter start excluded) and reads
the RSS before and the peak RSS (`ru_maxrss`) after the export, so the growth is the export's own.
Finally it validates the 10,000-item file against the packaged schema. Prints measured figures beside
the ideal they are compared with. Run: `python benchmarks/bench_export.py`.
"""

import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import insert

import experiment_runner  # noqa: F401
from experiment_runner.store import Store, open_store
from experiment_runner.store.tables import Annotation, Conversation, Evaluation, Experiment, Item, Message
from experiment_runner.store.timeutil import now

SIZES = (1_000, 10_000)
WORDS = "the a river passage city report model answer fire pine seed cone growth forest data value year".split()
LABELS = ("Fabrication", "Context Misattribution")


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words) + "."


def _messages(conversation_id: str, question: str, reply: str, generation: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": str(uuid.uuid4()),
            "conversation_id": conversation_id,
            "sequence_number": 0,
            "role": "user",
            "parts": [{"type": "text", "content": question}],
            "generation": None,
        },
        {
            "id": str(uuid.uuid4()),
            "conversation_id": conversation_id,
            "sequence_number": 1,
            "role": "assistant",
            "parts": [{"type": "text", "content": reply}],
            "generation": generation,
        },
    ]


def build_sources(store: Store, n: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """`n` source conversations (user question ~1.1 KB, reply ~400 B); their content for the copies."""
    rng, stamp = random.Random(7), now()
    sources = []
    for i in range(n):
        generation = {
            "model": "bench-model",
            "provider": "bench",
            "input_tokens": 300 + i % 50,
            "output_tokens": 90 + i % 30,
            "cost_usd": 0.0001,
            "latency_ms": 500.0 + i % 400,
            "finish_reasons": ["stop"],
        }
        sources.append((f"bench-{i:06d}", _text(rng, 1100), _text(rng, 400), generation))
    with store.write() as session:
        session.execute(
            insert(Conversation),
            [{"id": s[0], "type": "source", "content_hash": s[0], "created_at": stamp} for s in sources],
        )
        session.execute(insert(Message), [m for s in sources for m in _messages(*s)])
    return sources


def build_experiment(store: Store, sources: list[tuple[str, str, str, dict[str, Any]]], name: str) -> str:
    """A finished pass-through experiment over `sources`, as the engine would leave it."""
    experiment_id, stamp = str(uuid.uuid4()), now()
    conversations, messages, items, evaluations, annotations = [], [], [], [], []
    for position, (source_id, question, reply, generation) in enumerate(sources):
        result_id, item_id, evaluation_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
        conversations.append({"id": result_id, "type": "result", "content_hash": result_id, "created_at": stamp})
        copied = _messages(result_id, question, reply, generation)
        messages += copied
        items.append(
            {
                "id": item_id,
                "experiment_id": experiment_id,
                "position": position,
                "source_conversation_id": source_id,
                "result_conversation_id": result_id,
                "status": "completed",
                "evaluations_expected": 1,
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
        evaluations.append(
            {
                "id": evaluation_id,
                "item_id": item_id,
                "message_id": copied[1]["id"],
                "status": "completed",
                "model": "judge",
                "input_tokens": 700,
                "output_tokens": 60,
                "detection_duration_ms": 800.0,
                "total_duration_ms": 900.0,
                "error_message": None,
                "created_at": stamp,
            }
        )
        for k in range(1 + position % 2):
            start = 10 * k
            annotations.append(
                {
                    "id": str(uuid.uuid4()),
                    "evaluation_id": evaluation_id,
                    "position": k,
                    "label": LABELS[k],
                    "text": reply[start : start + 8],
                    "explanation": "not in the passages",
                    "message_part_index": 0,
                    "start_offset": start,
                    "end_offset": start + 8,
                    "tool_name": None,
                    "parameter_name": None,
                }
            )
    with store.write() as session:
        session.execute(
            insert(Experiment),
            [
                {
                    "id": experiment_id,
                    "name": name,
                    "model": "bench/target",
                    "pass_through": True,
                    "conversation_ids": [s[0] for s in sources],
                    "created_at": stamp,
                    "completed_at": now(),
                    "evaluator_model": "judge",
                }
            ],
        )
        session.execute(insert(Conversation), conversations)
        session.execute(insert(Message), messages)
        session.execute(insert(Item), items)
        session.execute(insert(Evaluation), evaluations)
        session.execute(insert(Annotation), annotations)
    return experiment_id


def build(db: str) -> None:
    """In a child process (so that the measuring children do not inherit its peak RSS): build; print ids."""
    store = open_store(db)
    sources = build_sources(store, max(SIZES))
    experiments = {n: build_experiment(store, sources[:n], f"bench {n}") for n in SIZES}
    store.close()
    print(json.dumps(experiments))


def _current_rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def measure(db: str, experiment_id: str, out: str) -> None:
    """In a fresh process: time one export and the peak-RSS growth it causes; print JSON."""
    from experiment_runner.results.export import write_export

    store = open_store(db)
    current = _current_rss_kib()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    stats = write_export(store, experiment_id, out)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_kib": current,
                "maxrss_before_kib": before,
                "maxrss_after_kib": after,
                "items": stats.items,
                "bytes": stats.bytes,
            }
        )
    )


def validate(path: Path) -> float:
    """Seconds to validate an export file against the packaged schema (raises if invalid)."""
    import jsonschema

    from experiment_runner.results.export import load_export_schema

    start = time.perf_counter()
    validator = jsonschema.Draft202012Validator(load_export_schema(), format_checker=jsonschema.FormatChecker())
    validator.validate(json.loads(path.read_text(encoding="utf-8")))
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        start = time.perf_counter()
        run = subprocess.run([sys.executable, __file__, "--build", str(db)], check=True, capture_output=True, text=True)
        experiments = {int(n): experiment_id for n, experiment_id in json.loads(run.stdout).items()}
        built = time.perf_counter() - start
        results = {}
        for n, experiment_id in experiments.items():
            out = Path(tmp) / f"export-{n}.json"
            run = subprocess.run(
                [sys.executable, __file__, "--measure", str(db), experiment_id, str(out)],
                check=True,
                capture_output=True,
                text=True,
            )
            results[n] = json.loads(run.stdout)
            assert results[n]["items"] == n
        validation = validate(Path(tmp) / f"export-{max(SIZES)}.json")

    small, large = (results[n] for n in SIZES)
    growth = {n: (r["maxrss_after_kib"] - r["rss_kib"]) / 1024 for n, r in results.items()}
    ratio = max(SIZES) / min(SIZES)
    rows = [
        ("build (bulk inserts, 11k items)", f"{built:.1f} s", "", "setup only"),
        (
            "export time",
            f"{small['seconds']:.2f} s",
            f"{large['seconds']:.2f} s",
            f"linear: 10k ~ {ratio:.0f}x 1k (measured {large['seconds'] / small['seconds']:.1f}x)",
        ),
        (
            "export rate",
            f"{small['items'] / small['seconds']:,.0f} items/s",
            f"{large['items'] / large['seconds']:,.0f} items/s",
            "same at both sizes",
        ),
        ("file size", f"{small['bytes'] / 1e6:.1f} MB", f"{large['bytes'] / 1e6:.1f} MB", f"~{ratio:.0f}x (linear)"),
        ("RSS at start (store open)", f"{small['rss_kib'] / 1024:.0f} MiB", f"{large['rss_kib'] / 1024:.0f} MiB", ""),
        (
            "ru_maxrss before -> after export",
            *(f"{r['maxrss_before_kib'] / 1024:.0f} -> {r['maxrss_after_kib'] / 1024:.0f} MiB" for r in (small, large)),
            "",
        ),
        (
            "export's growth (peak after - RSS at start)",
            f"{growth[SIZES[0]]:.1f} MiB",
            f"{growth[SIZES[1]]:.1f} MiB",
            f"flat: 10k within 1.5x of 1k (measured {growth[SIZES[1]] / max(growth[SIZES[0]], 0.1):.2f}x)",
        ),
        ("schema validation of the 10k file", "", f"valid, {validation:.1f} s", "valid (Draft 2020-12 + formats)"),
    ]
    headers = ("measure", "1,000 items", "10,000 items", "ideal")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(4)]
    for row in [headers, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--measure":
        measure(*sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "--build":
        build(sys.argv[2])
    else:
        main()
