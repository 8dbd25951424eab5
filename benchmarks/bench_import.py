"""Time `experiment-runner import` of 10,000 conversations (issue 3).

Builds a JSONL file of 10,000 conversations from the bundled RAGTruth sample (new ids, same
content, ~2.2 messages each), then imports it twice into a fresh store: once in process
(`import_files`, interpreter start excluded) and once through the CLI (a new user's view). Prints
a table of measured figures against the targets. Run: `python benchmarks/bench_import.py [N]`.
"""

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _table import print_table  # benchmarks/ is on sys.path when a script here runs

import experiment_runner  # noqa: F401
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import open_store

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "fixtures" / "ragtruth-sample.conversations.jsonl"


def build_input(path: Path, n: int) -> int:
    sample = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    messages = 0
    with path.open("w") as out:
        for i in range(n):
            conv = dict(sample[i % len(sample)], id=f"bench-{i:06d}")
            messages += len(conv["messages"])
            out.write(json.dumps(conv) + "\n")
    return messages


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "convs.jsonl"
        messages = build_input(data, n)
        size_mb = data.stat().st_size / 1e6

        store = open_store(Path(tmp) / "inproc.db")
        start = time.perf_counter()
        result = import_files(store, [str(data)])
        inproc = time.perf_counter() - start
        assert result.new == n
        start = time.perf_counter()
        again = import_files(store, [str(data)])
        reimport = time.perf_counter() - start
        assert again.new == 0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "experiment_runner", "--db", str(Path(tmp) / "cli.db"), "import", str(data)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        cli = time.perf_counter() - start

    rows = [
        ("conversations", f"{n}", ""),
        ("messages", f"{messages}", ""),
        ("input size", f"{size_mb:.1f} MB", ""),
        ("import, in process", f"{inproc:.2f} s", "< 5 s (batched, one transaction)"),
        ("rate", f"{n / inproc:,.0f} conv/s", "> 2,000 conv/s"),
        ("re-import (all unchanged)", f"{reimport:.2f} s", "< import time"),
        ("import via CLI (incl. interpreter start)", f"{cli:.2f} s", "< 6 s"),
        ("peak RSS (in-process run)", f"{rss:.0f} MiB", "< 500 MiB"),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
