"""Engine throughput (issue 4): 400 conversations, K=50, the bundled server at 200 ms latency, replay only.

The model server runs in its own process (so it does not share our event loop or GIL). The run is
timed in process around `run_experiment` (interpreter start and the litellm import excluded; creating
the experiment excluded). Ideal = N * L / K. Two runs
in one process: the first pays litellm's one-time client setup, the second is steady state. Run: `python benchmarks/bench_engine.py [N] [K] [LATENCY_MS]`.
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
from experiment_runner.engine.experiments import ExperimentSpec, create_experiment
from experiment_runner.engine.llm import litellm_module
from experiment_runner.engine.run import RunOptions, run_experiment
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import open_store

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "fixtures" / "ragtruth-sample.conversations.jsonl"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    latency_ms = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    server = subprocess.Popen(
        [sys.executable, "-m", "experiment_runner.fixtures.fakellm", "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        api_base = server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            sample = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
            data = Path(tmp) / "convs.jsonl"
            data.write_text("".join(json.dumps(dict(sample[i % len(sample)], id=f"b{i}")) + "\n" for i in range(n)))
            store = open_store(Path(tmp) / "bench.db")
            ids = import_files(store, [str(data)]).ids
            litellm_module()
            runs = []
            for _ in range(2):  # first run: litellm's one-time client setup included; second: warm
                experiment_id = create_experiment(store, ExperimentSpec("bench", "openai/bench", ids, api_base=api_base))
                cpu0, start = cpu_seconds(), time.perf_counter()
                progress = run_experiment(store, experiment_id, RunOptions(concurrency=k))
                runs.append((time.perf_counter() - start, cpu_seconds() - cpu0))
                assert progress.completed == n, progress
        stats = json.loads(subprocess.run(["curl", "-s", api_base.replace("/v1", "/_control/stats")], capture_output=True, text=True).stdout or "{}")
    finally:
        server.terminate()
        server.wait()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ideal = n * latency_ms / 1000 / k
    rows = [
        ("items", f"{n}", ""),
        ("concurrency K", f"{k}", ""),
        ("server latency", f"{latency_ms} ms", ""),
        ("wall time, first run (cold)", f"{runs[0][0]:.2f} s", f"ideal N*L/K = {ideal:.2f} s"),
        ("wall / ideal, first run", f"{runs[0][0] / ideal:.2f}x", "<= 1.5x"),
        ("wall time, second run (warm)", f"{runs[1][0]:.2f} s", f"ideal N*L/K = {ideal:.2f} s"),
        ("wall / ideal, second run", f"{runs[1][0] / ideal:.2f}x", "<= 1.5x"),
        ("CPU time per run (user+sys)", f"{runs[1][1]:.2f} s", f"{runs[1][1] / n * 1000:.1f} ms per item (litellm alone ~4.5)"),
        ("peak in-flight at server", f"{stats.get('peak_in_flight', '?')}", f"= K ({k})"),
        ("TCP connections opened", f"{stats.get('connections', '?')}", f"about K ({k}) for both runs: reused"),
        ("peak RSS", f"{rss:.0f} MiB", "litellm alone is ~170 MiB"),
    ]
    print_table(rows)


if __name__ == "__main__":
    main()
