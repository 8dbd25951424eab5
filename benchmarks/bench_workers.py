"""Several worker processes on one run (issue 23): the c2 table next to the peers, the scale run, kill -9.

Modes:

    python benchmarks/bench_workers.py c2 --peerbench ../shared/peerbench [--reps 2]
        400 items, a target and a judge call each, K=50, 200 ms: `experiment-runner run` with --workers 1, 2 and
        the default, next to the openai SDK loop, the bare litellm loop and promptfoo, and `python -c "import
        litellm"` on the project's interpreter, in one run of peerbench's bench.py (whole processes, interleaved,
        medians; its peers must be set up: `bash setup.sh` there). Also `litellm_floor.py`: peerbench's bare
        litellm loop forked into 2 processes after a collector-paused import, with no store: what a litellm-based
        runner can reach here at best.
    python benchmarks/bench_workers.py scale [--db URL] [--reps 1]
        120 items, no judge, our fake server at 500 ms, K=4 per process: 1, 2 and 4 worker processes
        (`worker --experiment ID --concurrency 4`, started together), timed at the server from the first request
        to the last reply.
    python benchmarks/bench_workers.py kill [--db URL] [--remote]
        the scale run with 4 workers, one of them killed (-9) a third of the way: every item completes (the store's
        item statuses and the experiment's completed_at), how many prompts were sent twice (at most that worker's
        K), none three times, how long until its items were taken. `--remote` starts the killed worker under
        `unshare --uts` with another hostname (needs root), so the others cannot see its pid is gone and take its
        items over only once its heartbeat is older than EXPERIMENT_RUNNER_LEASE_TIMEOUT, as for a worker that
        ran on another machine.

`--db` is where the store lives (default: a fresh SQLite file per run; a `postgresql://` URL once the store
takes one: each run then imports into it and runs exactly its own conversations).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import print_grid  # noqa: E402

from experiment_runner.fixtures.fakellm import FakeLLM  # noqa: E402

CLI = [sys.executable, "-m", "experiment_runner"]


def c2(args: argparse.Namespace) -> None:
    """Run peerbench's bench.py with three extra scenarios (the project with --workers 1, 2, default) and
    `python -c "import litellm"` on the project's interpreter, all interleaved in its repetitions."""
    sys.path.insert(0, str(Path(args.peerbench).resolve()))
    import bench  # type: ignore[import-not-found]  # peerbench's, given by path: nothing here ships it

    loads: dict[str, list[float]] = {}

    def with_workers(build: Callable[..., Any], label: str, workers: str | None) -> Callable[..., Any]:
        def wrapped(port: int, rundir: str, a: Any) -> Any:
            cmd, env, cwd = build(port, rundir, a)
            loads.setdefault(label, []).append(os.getloadavg()[0])  # the default decides on the 1-minute load
            return (cmd + ["--workers", workers] if workers else cmd), env, cwd
        return wrapped

    def import_litellm(port: int, rundir: str, a: Any) -> Any:
        return [sys.executable, "-c", "import litellm"], bench.base_env(LITELLM_LOCAL_MODEL_COST_MAP="True"), rundir

    def import_sqlmodel(port: int, rundir: str, a: Any) -> Any:  # what a runner with the required store loads besides
        return [sys.executable, "-c", "import sqlmodel"], bench.base_env(), rundir

    def litellm_floor(port: int, rundir: str, a: Any) -> Any:
        floor = Path(__file__).resolve().parent / "litellm_floor.py"
        return ([sys.executable, str(floor), "--base-url", f"http://127.0.0.1:{port}/v1", "--prompts", os.path.join(a.data, "prompts.json"),
                 "-n", str(a.n), "--calls", "2", "--concurrency", str(a.k), "--processes", "2"],
                bench.base_env(LITELLM_LOCAL_MODEL_COST_MAP="True"), rundir)

    for label, workers in (("w1", "1"), ("w2", "2"), ("default", None)):
        bench.SCENARIOS[f"project-{label}-c2"] = (2, with_workers(bench.sc_project(2), label, workers))
    bench.SCENARIOS["import-litellm"] = (1, import_litellm)
    bench.SCENARIOS["import-sqlmodel"] = (1, import_sqlmodel)
    bench.SCENARIOS["litellm-floor-2p-c2"] = (2, litellm_floor)
    os.environ.setdefault("PEER_PROJECT_BIN", str(Path(sys.executable).with_name("experiment-runner")))
    names = ["project-w1-c2", "project-w2-c2", "project-default-c2", "openai-c2", "litellm-c2", "promptfoo-c2", "litellm-floor-2p-c2"]
    out = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    sys.argv = ["bench.py", "--reps", str(args.reps), "--only", ",".join([*names, "import-litellm", "import-sqlmodel"]), "--no-startup", "--no-fixed",
                "--out", str(out)]
    bench.main()
    result = json.loads((out / "summary.json").read_text())
    summary = result["summary"]
    peers = [summary[n]["wall_median_s"] for n in ("openai-c2", "litellm-c2", "promptfoo-c2") if n in summary]
    rows = []
    for name in names:
        s = summary.get(name, {})
        wall = s.get("wall_median_s")
        ratio = f"{wall / min(peers):.2f}x" if wall and peers else "-"
        rows.append([name, f"{wall:.2f}" if wall else "-", ", ".join(f"{w:.2f}" for w in s.get("walls", [])), ratio,
                     str(s.get("cpu_median_s", "-")), "yes" if s.get("all_complete") else "NO"])
    print_grid(["system", "c2 wall s (median)", "runs", "/ fastest peer", "CPU s", "all complete"], rows)
    ideal, imported = summary["project-default-c2"]["ideal_s"], summary["import-litellm"]["wall_median_s"]
    default = summary["project-default-c2"]["wall_median_s"]
    print(f"python -c 'import litellm' (project interpreter): {imported:.2f} s median ({summary['import-litellm']['walls']}); "
          f"ideal {ideal} s")
    if "litellm-floor-2p-c2" in summary and "import-sqlmodel" in summary:
        floor, sqlmodel = summary["litellm-floor-2p-c2"]["wall_median_s"], summary["import-sqlmodel"]["wall_median_s"]
        print(f"litellm floor (2 forked processes, no store) {floor:.2f} s; python -c 'import sqlmodel' {sqlmodel:.2f} s; "
              f"floor + that import {floor + sqlmodel:.2f} s")
    print(f"target: default <= 0.70 x fastest peer = {0.7 * min(peers):.2f} s, or <= ideal + import litellm + 0.5 = "
          f"{ideal + imported + 0.5:.2f} s; default measured {default:.2f} s -> "
          f"{'met' if default <= max(0.7 * min(peers), ideal + imported + 0.5) else 'missed'}")
    print(f"1-minute load average when each default run started: {loads.get('default')} (where workers are forked "
          f"it picks 2 on 2+ cores; else only when cores - load >= 1); load average start {result['meta']['loadavg_start']}, end {result['meta']['loadavg_end']}; "
          f"raw runs in {out}")


def _conversations(folder: Path, count: int, tag: str) -> Path:
    path = folder / f"scale-{tag}.jsonl"
    path.write_text("".join(json.dumps({"id": f"{tag}-{i}", "messages": [
        {"role": "user", "content": f"[{tag}] item {i}: say something about the number {i}."},
        {"role": "assistant", "content": "placeholder"}]}) + "\n" for i in range(count)))
    return path


def _db(args: argparse.Namespace, folder: Path) -> str:
    return args.db or str(folder / "store.db")


def _start_workers(db: str, data: Path, fake: FakeLLM, workers: int, per_process: int,
                   remote_first: bool = False) -> tuple[str, list[subprocess.Popen[str]]]:
    """Import `data` and create its experiment (in this process), then start `workers` `worker` processes at once.

    `remote_first`: the first runs in its own UTS namespace named `bench-remote`, so it looks like another host."""
    from experiment_runner.engine.experiments import create_experiment
    from experiment_runner.engine.spec import ExperimentSpec
    from experiment_runner.ingest.importing import import_files
    from experiment_runner.store import open_store

    store = open_store(db)
    try:
        ids = import_files(store, [str(data)]).ids
        experiment_id = create_experiment(store, ExperimentSpec(name=f"scale-{workers}", model="openai/target", conversation_ids=ids, api_base=fake.api_base))
    finally:
        store.close()
    env = {**os.environ, "EXPERIMENT_RUNNER_NO_CACHE": "1", "EXPERIMENT_RUNNER_DB": db}
    cmd = [*CLI, "worker", "--experiment", experiment_id, "--concurrency", str(per_process)]
    remote = ["unshare", "--uts", "sh", "-c", 'hostname bench-remote && exec "$@"', "sh", *cmd]  # execs: the pid is the worker's
    return experiment_id, [subprocess.Popen(remote if remote_first and i == 0 else cmd, env=env, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True) for i in range(workers)]


def _finish(procs: list[subprocess.Popen[str]]) -> list[int]:
    for proc in procs:
        proc.communicate(timeout=600)
    return [proc.returncode for proc in procs]


def _server_span(fake: FakeLLM) -> float:
    timeline = fake.timeline()
    return max(t[2] or t[1] for t in timeline) - min(t[1] for t in timeline)


def scale(args: argparse.Namespace) -> None:
    """1, 2 and 4 worker processes, interleaved per repetition; medians of the server-side span."""
    spans: dict[int, list[float]] = {p: [] for p in (1, 2, 4)}
    for rep in range(args.reps):
        for processes in spans:
            with tempfile.TemporaryDirectory() as tmp, FakeLLM(latency_ms=args.latency_ms) as fake:
                data = _conversations(Path(tmp), args.items, f"p{processes}r{rep}{time.time_ns()}")
                codes = _finish(_start_workers(_db(args, Path(tmp)), data, fake, processes, args.k)[1])
                assert codes == [0] * processes and fake.request_count == args.items, codes
                spans[processes].append(_server_span(fake))
    one = statistics.median(spans[1])
    ideal = args.items / args.k * args.latency_ms / 1000
    rows = [[str(p), f"{statistics.median(s):.2f}", ", ".join(f"{x:.2f}" for x in s), f"{one / statistics.median(s):.2f}x",
             f"{ideal / p:.1f}"] for p, s in spans.items()]
    print_grid(["worker processes", "first request to last reply, s", "runs", "speed-up vs 1", "ideal s"], rows)
    print(f"{args.items} items, no judge, {args.latency_ms:g} ms, K={args.k} per process, store {args.db or 'SQLite (a fresh file per run)'}; "
          f"load average {os.getloadavg()[0]:.1f}")


def _store_state(db: str, experiment_id: str) -> tuple[str, str]:
    """The experiment's item statuses (`completed 120`) and its completed_at, read from the store."""
    from sqlalchemy import text

    from experiment_runner.store import open_store
    from experiment_runner.store.queries import results

    store = open_store(db)
    try:
        with store.read() as session:
            conn = session.connection()
            counts = results.status_counts(conn, experiment_id)
            done = conn.execute(text("SELECT completed_at FROM experiment WHERE id = :id"), {"id": experiment_id}).scalar_one()
    finally:
        store.close()
    return ", ".join(f"{row.status} {row.n}" for row in counts), str(done or "not completed")


def kill(args: argparse.Namespace) -> None:
    """4 workers, one killed -9 a third of the way through; with `--remote` it looks like another host's."""
    with tempfile.TemporaryDirectory() as tmp, FakeLLM(latency_ms=args.latency_ms) as fake:
        db = _db(args, Path(tmp))
        data = _conversations(Path(tmp), args.items, f"kill{time.time_ns()}")
        experiment_id, procs = _start_workers(db, data, fake, 4, args.k, remote_first=args.remote)
        while fake.request_count < args.items // 3:
            time.sleep(0.02)
        procs[0].send_signal(signal.SIGKILL)
        killed_at = time.time()
        codes = _finish(procs)
        finished_at = time.time()
        timeline = fake.timeline()
        statuses, completed_at = _store_state(db, experiment_id)
    asked = Counter(prompt for prompt, _, _ in timeline)
    again = [arrived for prompt, arrived, _ in timeline if asked[prompt] > 1 and arrived > killed_at]
    taken = f"{min(again) - killed_at:.2f} s" if again else "-"
    timeout = os.environ.get("EXPERIMENT_RUNNER_LEASE_TIMEOUT", "10 (default)")
    rows = [["killed worker", "another host (own UTS namespace)" if args.remote else "this host"],
            ["EXPERIMENT_RUNNER_LEASE_TIMEOUT s", timeout],
            ["exit statuses", " ".join(map(str, codes))], ["item statuses in the store", statuses],
            ["experiment completed_at", completed_at], ["distinct prompts at the server", str(len(asked))],
            ["requests at the server", str(len(timeline))],
            ["prompts sent twice", str(sum(n == 2 for n in asked.values()))],
            ["prompts sent three times or more", str(sum(n > 2 for n in asked.values()))],
            ["kill to first retaken request", taken], ["kill to last worker exit", f"{finished_at - killed_at:.2f} s"]]
    print_grid(["kill -9 of 1 of 4 workers", "measured"], rows)
    how = ("it looked like another host's, so its items waited for its heartbeat to be older than EXPERIMENT_RUNNER_LEASE_TIMEOUT"
           if args.remote else "it ran on this host, so its pid was seen gone at the next claim")
    print(f"{args.items} items, {args.latency_ms:g} ms, K={args.k} per process, store {args.db or 'SQLite'}; {how}; "
          f"load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("mode", choices=("c2", "scale", "kill"))
    parser.add_argument("--peerbench", default="../shared/peerbench", help="c2: the folder of peerbench's bench.py")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--db", help="scale/kill: the store (default: a fresh SQLite file per run)")
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--latency-ms", type=float, default=500)
    parser.add_argument("--k", type=int, default=4, help="scale/kill: concurrency per process")
    parser.add_argument("--remote", action="store_true", help="kill: the killed worker looks like another host's (unshare --uts; root)")
    args = parser.parse_args()
    {"c2": c2, "scale": scale, "kill": kill}[args.mode](args)


if __name__ == "__main__":
    main()
