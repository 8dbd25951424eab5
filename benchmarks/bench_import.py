"""Time `experiment-runner import` of 10,000 conversations (issue 3).

Builds a JSONL file of 10,000 conversations from the bundled RAGTruth sample (new ids, same
content, ~2.2 messages each), then imports it twice into a fresh store: once in process
(`import_files`, interpreter start excluded) and once through the CLI (a new user's view). Prints
a table of measured figures against the targets. Run: `python benchmarks/bench_import.py [N] [ARRAY_MB]`.

Then the JSON-array rows (issue 14): a ~ARRAY_MB (default 100) MB array and the same conversations as
JSONL are parsed (`read_source`, no store) in a fresh interpreter each, for time and peak memory;
the parser before issue 14 (`json.loads` of the whole text, then a line count from the start of the
text for every element: quadratic) is timed on a 5 MB array, since on 100 MB it did not finish in
10 minutes.
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


def build_array(jsonl: Path, array: Path, megabytes: float) -> int:
    """A pretty-ish JSON array (one conversation per line) of about `megabytes` MB; the same as JSONL."""
    sample = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    written, n = 0, 0
    with jsonl.open("w") as lines, array.open("w") as out:
        out.write("[\n")
        while written < megabytes * 1e6:
            text = json.dumps(dict(sample[n % len(sample)], id=f"arr-{n:07d}"))
            out.write(("," if n else "") + text + "\n")
            lines.write(text + "\n")
            written += len(text) + 2
            n += 1
        out.write("]\n")
    return n


_PARSE = """
import resource, sys, time
from experiment_runner.ingest.importing import read_source
start = time.perf_counter()
count = sum(1 for _ in read_source(sys.argv[1]))
print(count, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def parse_in_child(path: Path) -> tuple[int, float, float]:
    """(conversations, seconds, peak RSS MiB) of parsing `path` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _PARSE, str(path)], check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), float(out[1]), float(out[2])


def old_array_parse(text: str) -> int:
    """The JSON-array parser before issue 14: the whole array decoded, then each element's line counted from the start."""
    array = json.loads(text)
    decoder, pos = json.JSONDecoder(), text.index("[") + 1
    for _ in range(len(array)):
        while text[pos] in " \t\r\n,":
            pos += 1
        text.count("\n", 0, pos)
        _, pos = decoder.raw_decode(text, pos)
    return len(array)


def array_rows(megabytes: float) -> list[tuple[str, str, str]]:
    """The JSON-array rows: before on 5 MB, after on `megabytes` MB, against JSONL of the same content."""
    with tempfile.TemporaryDirectory() as tmp:
        small_lines, small = Path(tmp) / "small.jsonl", Path(tmp) / "small.json"
        small_n = build_array(small_lines, small, 5)
        text = small.read_text()
        start = time.perf_counter()
        assert old_array_parse(text) == small_n
        before = time.perf_counter() - start
        after_small = parse_in_child(small)[1]
        lines, array = Path(tmp) / "big.jsonl", Path(tmp) / "big.json"
        n = build_array(lines, array, megabytes)
        size = array.stat().st_size / 1e6
        got, array_s, array_rss = parse_in_child(array)
        assert got == n
        _, lines_s, lines_rss = parse_in_child(lines)
    return [
        (f"JSON array {5} MB ({small_n} conv), before", f"{before:.2f} s", "(quadratic: 110 MB did not finish in 10 min)"),
        (f"JSON array {5} MB, after", f"{after_small:.2f} s", "linear"),
        (f"JSON array {size:.0f} MB ({n} conv), after", f"{array_s:.2f} s, {array_rss:.0f} MiB", "about JSONL's time and memory"),
        (f"same as JSONL ({size:.0f} MB)", f"{lines_s:.2f} s, {lines_rss:.0f} MiB", ""),
    ]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    megabytes = float(sys.argv[2]) if len(sys.argv) > 2 else 100
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
        *array_rows(megabytes),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
