"""`experiment-runner demo`: the whole loop on bundled data, with local simulated models, no API key.

The bundled sample holds 40 real RAGTruth replies with human-labelled problem spans. The bundled
OpenAI-compatible server plays both models:

- the *target* answers each question with the reply recorded for it in the data set (where one
  question has several recorded replies, all of its conversations get the first one);
- the *evaluator* answers with the human labels of the reply it is shown, quoting the labelled text
  (every other quote with its case and spacing changed, as real evaluators drift, so the span
  alignment is exercised).

So the demo is an experiment with replay and evaluation over real HTTP through litellm, and the
score against the human labels measures the plumbing (alignment, export), not a model. It writes
the export and an HTML report of the run side by side.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from experiment_runner.conversation import JSONObject
from experiment_runner.engine.estimate import Estimate, dry_run
from experiment_runner.engine.experiments import ExperimentSpec, create_experiment
from experiment_runner.engine.progress import Progress, RunOptions
from experiment_runner.engine.run import run_experiment
from experiment_runner.fixtures.fakellm import FakeLLM
from experiment_runner.ingest.importing import import_files
from experiment_runner.report.html import write_report
from experiment_runner.results.export import load_export_schema, write_export
from experiment_runner.results.gold import read_gold_file, score_experiment
from experiment_runner.results.span_scores import GoldScores
from experiment_runner.store import Store

SAMPLE = "ragtruth-sample.conversations.jsonl"
GOLD = "ragtruth-sample.gold.jsonl"
TARGET, EVALUATOR = "demo-target", "demo-evaluator"
REAL_TARGET, REAL_EVALUATOR = "openai/gpt-4o-mini", "openai/gpt-4o"  # the command the demo suggests next


@dataclass(frozen=True)
class DemoResult:
    """What the demo made and measured."""

    experiment_id: str
    export_path: Path
    export_bytes: int
    export_problem: str | None  # None when the export validates against the schema
    report_path: Path
    score: GoldScores
    seconds: float
    real_model_estimate: Estimate  # the dry run of the suggested real-model command


def _drift(text: str) -> str:
    """A quote as a sloppy evaluator might copy it: spacing collapsed, case swapped."""
    return " ".join(text.split()).swapcase() if text.strip() else text


def simulated_models(conversations: list[JSONObject], gold: dict[str, list[JSONObject]]) -> list[JSONObject]:
    """Scripts for the bundled server: recorded replies for the target, human labels for the evaluator."""
    scripts: list[JSONObject] = []
    for conversation in conversations:
        prompt = conversation["messages"][0]["parts"][0]["content"]
        reply = conversation["messages"][-1]["parts"][0]["content"]
        scripts.append({"model": TARGET, "match": prompt, "reply": {"content": reply}})
        quotes = [
            {"label": a["label"], "text": _drift(a["text"]) if i % 2 else a["text"], "message_part_index": 0,
             "explanation": f"Human label ({a['source_label']}).", "tool_name": None, "parameter_name": None}
            for i, a in enumerate(gold.get(conversation["id"], []))
        ]
        scripts.append({"model": EVALUATOR, "match": reply, "reply": {"content": json.dumps({"annotations": quotes})}})
    return scripts


def run_demo(store: Store, output_dir: Path, on_progress: Callable[[Progress], None] | None = None) -> DemoResult:
    """Import the sample, run replay + evaluation against the simulated models, export and score."""
    started = time.perf_counter()
    output_dir.mkdir(parents=True, exist_ok=True)
    fixtures = resources.files("experiment_runner.fixtures")
    with resources.as_file(fixtures / SAMPLE) as sample, resources.as_file(fixtures / GOLD) as gold_file:
        ids = import_files(store, [str(sample)]).ids
        conversations = [json.loads(line) for line in sample.read_text(encoding="utf-8").splitlines()]
        gold_lines = list(read_gold_file(gold_file))
    gold = {line["conversation_id"]: line["annotations"] for _, line in gold_lines}
    with FakeLLM(latency_ms=40, scripts=simulated_models(conversations, gold)) as server:
        spec = ExperimentSpec(
            name="demo: RAGTruth replies, simulated models",
            model=f"openai/{TARGET}",
            conversation_ids=ids,
            api_base=server.api_base,
            evaluator_model=f"openai/{EVALUATOR}",
            evaluator_api_base=server.api_base,
        )
        experiment_id = create_experiment(store, spec)
        run_experiment(store, experiment_id, RunOptions(concurrency=8), on_progress)
    export_path = output_dir / "demo-export.json"
    stats = write_export(store, experiment_id, export_path)
    report_path = write_report(store, experiment_id, output_dir / "demo-report.html")
    score = score_experiment(store, experiment_id, gold_lines)
    real = ExperimentSpec(name="first", model=REAL_TARGET, conversation_ids=ids, evaluator_model=REAL_EVALUATOR)
    estimate = dry_run(store, real, check_models=False)  # what the suggested real-model command would cost
    return DemoResult(
        experiment_id, export_path, stats.bytes, _validate(export_path), report_path, score, time.perf_counter() - started, estimate
    )


def _validate(path: Path) -> str | None:
    """None if the file matches the export schema, else the first problem."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_export_schema(), format_checker=jsonschema.FormatChecker())
    error = jsonschema.exceptions.best_match(validator.iter_errors(json.loads(path.read_text(encoding="utf-8"))))
    return None if error is None else f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
