"""How often evaluation puts a quoted span at exactly the human-labelled offsets (issue 5).

For real replies with human-labelled spans, the bundled model server plays an evaluator that quotes
every gold span's text back, in three variants: verbatim, with whitespace runs collapsed to one space,
and collapsed with the case swapped. A pass-through experiment with that evaluator is run and exported;
the share of gold spans whose exported annotation (same label) has exactly the gold offsets is printed.

    python benchmarks/bench_alignment.py                                   # bundled 40-reply sample
    python benchmarks/bench_alignment.py --data ../shared/data/spans-dev   # the team's 300-reply set

`--data PREFIX` reads PREFIX.conversations.jsonl and PREFIX.gold.jsonl. Target: >= 99% in every variant.
"""

import argparse
import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import experiment_runner  # noqa: F401
from experiment_runner.engine.experiments import ExperimentSpec, create_experiment
from experiment_runner.engine.progress import RunOptions
from experiment_runner.engine.run import run_experiment
from experiment_runner.fixtures.fakellm import FakeLLM
from experiment_runner.ingest.importing import import_files
from experiment_runner.results.export import export_chunks
from experiment_runner.store import open_store

ROOT = Path(__file__).resolve().parent.parent
VARIANTS: dict[str, Callable[[str], str]] = {
    "verbatim": lambda text: text,
    "whitespace collapsed": lambda text: re.sub(r"\s+", " ", text),
    "collapsed + case swapped": lambda text: re.sub(r"\s+", " ", text).swapcase(),
}


def measure(prefix: Path, variant: Callable[[str], str]) -> tuple[int, int, int, float]:
    """(gold spans, exported at the gold offsets, annotations exported, seconds) for one variant."""
    conversations = prefix.with_name(prefix.name + ".conversations.jsonl")
    gold = [json.loads(line) for line in prefix.with_name(prefix.name + ".gold.jsonl").read_text().splitlines()]
    replies = {json.loads(line)["id"]: json.loads(line)["messages"][-1]["parts"][0]["content"]
               for line in conversations.read_text().splitlines()}
    labels = sorted({a["label"] for g in gold for a in g["annotations"]})
    scripts = [
        {"model": "judge", "match": replies[g["conversation_id"]], "reply": {"content": json.dumps({"annotations": [
            {"label": a["label"], "text": variant(a["text"]), "explanation": a["source_label"], "message_part_index": 0,
             "tool_name": None, "parameter_name": None} for a in g["annotations"]]})}}
        for g in gold if g["annotations"]
    ]
    with tempfile.TemporaryDirectory() as tmp, FakeLLM(scripts=scripts) as server:
        store = open_store(Path(tmp) / "align.db")
        ids = import_files(store, [str(conversations)]).ids
        spec = ExperimentSpec(
            "alignment", "recorded", ids, pass_through=True, evaluator_model="openai/judge", evaluator_api_base=server.api_base,
            labels={"labels": [{"name": name, "description": name} for name in labels]},
        )
        experiment_id = create_experiment(store, spec)
        started = time.perf_counter()
        run_experiment(store, experiment_id, RunOptions(concurrency=16))
        elapsed = time.perf_counter() - started
        export = json.loads("".join(export_chunks(store, experiment_id)))
    message_of = {item["source_conversation"]["id"]: item["result_conversation"]["messages"][-1]["id"] for item in export["items"]}
    exported = {
        (conversation, a["label"], a["start_offset"], a["end_offset"])
        for conversation, message_id in message_of.items()
        for a in export["evaluations"].get(message_id, {}).get("annotations", [])
    }
    spans = [(g["conversation_id"], a["label"], a["start_offset"], a["end_offset"]) for g in gold for a in g["annotations"]]
    return len(spans), sum(span in exported for span in spans), len(exported), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "fixtures" / "ragtruth-sample", help="prefix of the data files")
    args = parser.parse_args()
    print(f"data: {args.data}")
    print(f"{'quote variant':26} {'gold spans':>10} {'exact offsets':>13} {'share':>8}  target  run time")
    for name, variant in VARIANTS.items():
        total, exact, _, elapsed = measure(args.data, variant)
        print(f"{name:26} {total:>10} {exact:>13} {exact / total:>8.2%}  >= 99%  {elapsed:.1f} s")


if __name__ == "__main__":
    main()
