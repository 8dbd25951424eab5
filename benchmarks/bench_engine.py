"""What users wait for (issue 15): whole processes, start to exit, against a fake model server in its own process.

Scenarios (each a fresh process, timed from spawn to exit, nothing excluded):
  cli-c1 / cli-c2   `experiment-runner run` over N imported conversations (c2 adds `--evaluator-model`);
                    the store is a fresh SQLite file per run, the import into it is done beforehand, untimed
  litellm-c1/-c2    benchmarks/loop_litellm.py: a bare `litellm.acompletion` loop making the same calls
  openai-c1/-c2     benchmarks/loop_openai.py: a bare openai-SDK loop making the same calls
  cli-c2-k200       cli-c2 at K=200 (should be no slower than at K=50)
  *-c2-n1           the c2 scenarios with one item: the fixed cost of a run
c2 = a target call then a judge call per item. The server (`experiment_runner.fixtures.fakellm`, fixed latency)
is restarted for every run; its request count must equal N x calls. Every scenario runs once per repetition,
interleaved, and the table shows medians. CPU = user+sys of the process and the children it waited for
(os.wait4), peak RSS = its largest process. Ideal = ceil(N/K) x calls x latency.

    python benchmarks/bench_engine.py                        # N=400, K=50, 200 ms, 2 repetitions
    python benchmarks/bench_engine.py --reps 3 --only cli-c2,litellm-c2,openai-c2 --run-arg=--workers=2
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _table import print_grid  # benchmarks/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
LOOPS = {"litellm": HERE / "loop_litellm.py", "openai": HERE / "loop_openai.py"}


@dataclass(frozen=True)
class Scenario:
    name: str
    tool: str  # "cli", "litellm" or "openai"
    calls: int
    n: int
    k: int


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mb: float
    server_cpu: float
    requests: int
    peak_in_flight: int
    import_s: float | None
    complete: bool


@dataclass
class Results:
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def median(self, name: str, attr: str) -> float:
        values = [getattr(r, attr) for r in self.runs.get(name, []) if getattr(r, attr) is not None]
        return statistics.median(values) if values else math.nan


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without settings that would change what is measured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LITELLM_", "EXPERIMENT_RUNNER_", "FAKELLM_"))}
    return {**env, **extra}


def write_data(folder: Path, n: int) -> None:
    """Single-turn prompts as peerbench's make_data.py writes them: prompts.json for the loops, a JSONL for the CLI."""
    prompts = [f"Question {i}: what is {i} plus {i * 7 % 13}? Answer in one sentence." for i in range(n)]
    (folder / "prompts.json").write_text(json.dumps(prompts))
    for size in sorted({n, 1}):
        turns = ([{"role": "user", "content": p}, {"role": "assistant", "content": "placeholder"}] for p in prompts[:size])
        conversations = ({"id": f"s{i:05d}", "messages": messages} for i, messages in enumerate(turns))
        lines = (json.dumps(c) for c in conversations)
        (folder / f"conversations-{size}.jsonl").write_text("\n".join(lines) + "\n")


def wait_rusage(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> tuple[int, float, float]:
    """Reap `proc`: (exit code, user+sys CPU seconds, peak RSS MB) of it and the children it waited for."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_one(sc: Scenario, args: argparse.Namespace, folder: Path, rep: int) -> Run:
    server = subprocess.Popen([sys.executable, "-m", "experiment_runner.fixtures.fakellm", "--port", "0", "--latency-ms", str(args.latency_ms)],
                              stdout=subprocess.PIPE, text=True, env=clean_env())
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    log = folder / f"{sc.name}-r{rep}.log"
    try:
        if sc.tool == "cli":
            db = folder / f"{sc.name}-r{rep}.db"
            subprocess.run([args.cli, "--db", str(db), "import", str(folder / f"conversations-{sc.n}.jsonl")], check=True, capture_output=True, env=clean_env())
            cmd = [args.cli, "--db", str(db), "run", "--name", sc.name, "--model", "openai/fake", "--api-base", url, "--all", "--concurrency", str(sc.k), *args.run_arg]
            if sc.calls == 2:
                cmd += ["--evaluator-model", "openai/judge", "--evaluator-api-base", url]
            env = clean_env()
        else:
            db = None
            cmd = [args.python, str(LOOPS[sc.tool]), "--base-url", url, "--prompts", str(folder / "prompts.json"),
                   "-n", str(sc.n), "--calls", str(sc.calls), "--concurrency", str(sc.k)]
            env = clean_env(LITELLM_LOCAL_MODEL_COST_MAP="True")
        with log.open("w") as out:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
            rc, cpu, rss = wait_rusage(proc)
            wall = time.perf_counter() - start
        with urllib.request.urlopen(url.removesuffix("/v1") + "/_control/stats", timeout=10) as response:
            stats = json.load(response)
    finally:
        server.terminate()
        _, server_cpu, _ = wait_rusage(server)
        server.stdout.close()
    report: dict[str, Any] = next((json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"tool"')), {})
    complete = rc == 0 and stats["requests"] == sc.n * sc.calls and (sc.tool == "cli" or report.get("ok") == sc.n)
    if db is not None and args.keep is None:
        db.unlink()
    if not complete:
        print(f"  {sc.name}: INCOMPLETE rc={rc} requests={stats['requests']}; tail of its output:\n{log.read_text()[-1500:]}", file=sys.stderr)
    return Run(wall, cpu, rss, server_cpu, stats["requests"], stats["peak_in_flight"], report.get("import_s"), complete)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    n, k = args.n, args.k
    every = [Scenario(f"{tool}-c{calls}", tool, calls, n, k) for tool in ("cli", "litellm", "openai") for calls in (1, 2)]
    every.append(Scenario(f"cli-c2-k{args.k_big}", "cli", 2, n, args.k_big))
    if not args.no_fixed:
        every += [Scenario(f"{tool}-c2-n1", tool, 2, 1, k) for tool in ("cli", "litellm", "openai")]
    only = {s for s in args.only.split(",") if s}
    return [s for s in every if not only or s.name in only]


def fastest_loop(results: Results, chosen: list[Scenario], sc: Scenario) -> float:
    loops = [results.median(s.name, "wall") for s in chosen if s.tool != "cli" and s.calls == sc.calls and s.n == sc.n]
    return min(loops, default=math.nan)


def report(results: Results, chosen: list[Scenario], args: argparse.Namespace) -> None:
    rows = []
    for sc in chosen:
        ideal = math.ceil(sc.n / sc.k) * sc.calls * args.latency_ms / 1000
        wall, calls = results.median(sc.name, "wall"), sc.n * sc.calls
        runs = results.runs.get(sc.name, [])
        imported = results.median(sc.name, "import_s")
        rows.append([
            sc.name, str(sc.n), str(sc.k), f"{wall:.2f}", ", ".join(f"{r.wall:.2f}" for r in runs), f"{wall / ideal:.2f}x",
            f"{wall / fastest_loop(results, chosen, sc):.2f}x", f"{results.median(sc.name, 'cpu') / calls * 1000:.1f}",
            f"{results.median(sc.name, 'rss_mb'):.0f}", "" if math.isnan(imported) else f"{imported:.2f}",
            f"{results.median(sc.name, 'server_cpu'):.1f}", str(max((r.peak_in_flight for r in runs), default=0)),
            "yes" if runs and all(r.complete for r in runs) else "NO",
        ])
    headers = ["scenario", "N", "K", "wall s", "walls", "/ ideal", "/ fastest loop", "CPU ms/call", "peak RSS MB", "import s", "server CPU s", "peak in flight", "complete"]
    print_grid(headers, rows)
    med = results.median
    c2, loop2 = med("cli-c2", "wall"), min(med("litellm-c2", "wall"), med("openai-c2", "wall"))
    ideal2 = math.ceil(args.n / args.k) * 2 * args.latency_ms / 1000
    rss = max((r.rss_mb for name, runs in results.runs.items() if name.startswith("cli") for r in runs), default=math.nan)
    targets = [
        ("cli-c2 wall <= 0.70 x fastest c2 loop (openai, litellm)", c2, 0.70 * loop2),
        ("  or <= ideal + import litellm (this run) + 0.5 s", c2, ideal2 + med("litellm-c2", "import_s") + 0.5),
        ("cli-c2-n1 <= litellm-c2-n1 + 1.0 s", med("cli-c2-n1", "wall"), med("litellm-c2-n1", "wall") + 1.0),
        ("cli peak RSS MB <= 250", rss, 250.0),
        (f"cli-c2-k{args.k_big} wall <= cli-c2 wall (K={args.k})", med(f"cli-c2-k{args.k_big}", "wall"), c2),
    ]
    print()
    verdict = lambda m, lim: "?" if math.isnan(m + lim) else "yes" if m <= lim else "NO"
    print_grid(["target (issue 15)", "measured", "limit", "met"], [[t, f"{m:.2f}", f"{lim:.2f}", verdict(m, lim)] for t, m, lim in targets])
    print("\n(promptfoo is in ../shared/peerbench only; its c2 wall belongs in the first target too.)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--k-big", type=int, default=200, help="K of the extra cli-c2 row")
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    parser.add_argument("--no-fixed", action="store_true", help="skip the N=1 rows")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed imports that warm the file cache")
    parser.add_argument("--run-arg", action="append", default=[], help="extra argument for `experiment-runner run` (repeatable)")
    default_cli = Path(sys.executable).with_name("experiment-runner")
    parser.add_argument("--cli", default=str(default_cli) if default_cli.exists() else shutil.which("experiment-runner"),
                        help="the console script (default: the one beside this Python, not a pyenv shim)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the loops (default: this one, the runner's litellm)")
    parser.add_argument("--keep", metavar="DIR", help="keep the working files (data, stores, logs) in DIR")
    parser.add_argument("--json", metavar="FILE", help="also write every run as JSON")
    args = parser.parse_args()
    chosen = scenarios(args)
    load0 = os.getloadavg()
    versions = ", ".join(f"{p} {version(p)}" for p in ("experiment-runner", "litellm", "openai", "httpx"))
    print(f"N={args.n} K={args.k} latency={args.latency_ms:g} ms reps={args.reps}; {os.cpu_count()} CPUs; python {sys.version.split()[0]}; {versions}")
    print(f"cli: {args.cli} {' '.join(args.run_arg)}".rstrip())
    if not args.no_warmup:  # page cache: the first import of litellm after a while reads thousands of files
        subprocess.run([args.python, "-c", "import litellm, openai, experiment_runner.cli"], env=clean_env(LITELLM_LOCAL_MODEL_COST_MAP="True"), check=True)
    results = Results()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        write_data(folder, args.n)
        for rep in range(1, args.reps + 1):
            for sc in chosen:
                run = run_one(sc, args, folder, rep)
                results.runs.setdefault(sc.name, []).append(run)
                print(f"rep {rep} {sc.name}: wall {run.wall:.2f} s, cpu {run.cpu:.2f} s, rss {run.rss_mb:.0f} MB, complete {run.complete}", file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    print(f"load average (1, 5, 15 min): start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}\n")
    report(results, chosen, args)
    if args.json:
        Path(args.json).write_text(json.dumps({name: [r.__dict__ for r in runs] for name, runs in results.runs.items()}, indent=1))


if __name__ == "__main__":
    main()
