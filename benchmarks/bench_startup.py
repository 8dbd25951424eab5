"""Start-up cost of read-only commands (issue 15): `list` and `show ID` as whole processes, on a small store.

Next to them: `python -c pass`, `python -c "import sqlmodel"` (the floor of any command that opens the store),
`python -c "import litellm"` (with LITELLM_LOCAL_MODEL_COST_MAP=True) and the target, `import sqlmodel` + 0.25 s.
Every command runs once untimed (file cache), then --reps times, interleaved; the table shows medians. The store:
the bundled 40-conversation sample and one finished pass-through experiment over it (built untimed).
Then `python -X importtime` of `list`: each package by the imports that brought it in, and by its own time.

    python benchmarks/bench_startup.py              # 5 repetitions
    python benchmarks/bench_startup.py --reps 9 --importtime show
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

from _table import print_grid  # benchmarks/ is on sys.path when a script here runs

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "fixtures" / "ragtruth-sample.conversations.jsonl"
HEAVY = ("litellm", "openai", "fastapi", "uvicorn", "starlette", "jinja2", "httpx", "aiohttp", "pydantic", "sqlalchemy", "sqlmodel", "click", "tiktoken", "tokenizers")
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LITELLM_", "EXPERIMENT_RUNNER_"))}
    return {**env, **extra}


def build_store(cli: str, db: Path) -> str:
    """Import the sample and run one pass-through experiment over it (no model calls); its id."""
    subprocess.run([cli, "--db", str(db), "import", str(SAMPLE)], check=True, capture_output=True, env=clean_env())
    run = subprocess.run([cli, "--db", str(db), "run", "--name", "startup", "--model", "openai/none", "--pass-through", "--all"],
                         check=True, capture_output=True, text=True, env=clean_env())
    return run.stdout.strip().splitlines()[-1]


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def import_profile(cmd: list[str], env: dict[str, str], top: int) -> None:
    """`python -X importtime CMD`: each package by the import that first brought it in, and by its modules' own time."""
    stderr = subprocess.run([sys.executable, "-X", "importtime", *cmd], check=True, capture_output=True, text=True, env=env).stderr
    lines = [(int(m[1]), int(m[2]), (len(m[3]) - 1) // 2, m[4]) for m in IMPORT_LINE.finditer(stderr)]
    entries: dict[str, list[tuple[int, str]]] = defaultdict(list)  # package -> (cumulative us, "module <- importer")
    by_package: dict[str, int] = defaultdict(int)
    parents: dict[int, str] = {}
    for self_us, cumulative_us, depth, name in reversed(lines):  # reversed: an importer comes before what it imports
        parents[depth] = name
        package, parent = name.split(".")[0], parents.get(depth - 1, "(top level)")
        by_package[package] += self_us
        if parent.split(".")[0] != package:
            entries[package].append((cumulative_us, f"{name} <- {parent}"))
    total = sum(by_package.values())
    print(f"\n`python -X importtime {' '.join(cmd)}`: {total / 1e6:.2f} s of imports in all, {len(lines)} modules")
    outside = sorted(((sum(us for us, _ in e), package, max(e)[1]) for package, e in entries.items() if package != "experiment_runner"), reverse=True)
    print_grid(["package", "cumulative s", "share", "largest entry (module <- importer)"],
               [[package, f"{us / 1e6:.3f}", f"{us / total:.0%}", via] for us, package, via in outside[:top]])
    print()
    packages = sorted(by_package.items(), key=lambda p: -p[1])[:top]
    print_grid(["package (own time of its modules)", "self s", "share"], [[name, f"{us / 1e6:.3f}", f"{us / total:.0%}"] for name, us in packages])
    loaded = [name for name in HEAVY if name in by_package]
    print(f"\nheavy packages imported: {', '.join(loaded) or 'none'}; not imported: {', '.join(n for n in HEAVY if n not in by_package) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--importtime", choices=("list", "show"), default="list", help="the command to profile with -X importtime")
    parser.add_argument("--top", type=int, default=15, help="rows of the import profile")
    default_cli = Path(sys.executable).with_name("experiment-runner")
    parser.add_argument("--cli", default=str(default_cli) if default_cli.exists() else shutil.which("experiment-runner"),
                        help="the console script (default: the one beside this Python, not a pyenv shim)")
    args = parser.parse_args()
    py, env, lite_env = sys.executable, clean_env(), clean_env(LITELLM_LOCAL_MODEL_COST_MAP="True")
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "startup.db"
        experiment_id = build_store(args.cli, db)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([py, "-c", "pass"], env),
            'python -c "import sqlmodel"': ([py, "-c", "import sqlmodel"], env),
            'python -c "import litellm"': ([py, "-c", "import litellm"], lite_env),
            "experiment-runner --version": ([args.cli, "--version"], env),
            "experiment-runner list": ([args.cli, "--db", str(db), "list"], env),
            "experiment-runner show ID": ([args.cli, "--db", str(db), "show", experiment_id], env),
        }
        on_path = shutil.which("experiment-runner")
        if on_path and Path(on_path).resolve() != Path(args.cli).resolve():
            commands[f"experiment-runner list, via PATH ({on_path})"] = ([on_path, "--db", str(db), "list"], env)
        walls: dict[str, list[float]] = {label: [] for label in commands}
        for cmd, cmd_env in commands.values():
            wall(cmd, cmd_env)  # untimed: warm the file cache
        for _ in range(args.reps):
            for label, (cmd, cmd_env) in commands.items():
                walls[label].append(wall(cmd, cmd_env))
        load1 = os.getloadavg()
        median = {label: statistics.median(values) for label, values in walls.items()}
        target = median['python -c "import sqlmodel"'] + 0.25
        print(f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}; experiment-runner {version('experiment-runner')}, sqlmodel {version('sqlmodel')}, "
              f"SQLAlchemy {version('sqlalchemy')}, litellm {version('litellm')}; cli: {args.cli}")
        print(f"load average (1, 5, 15 min): start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}\n")
        rows = []
        for label, values in walls.items():
            meets = ("yes" if median[label] <= target else "NO") if label.startswith("experiment-runner list") or label.startswith("experiment-runner show") else ""
            rows.append([label, f"{median[label]:.3f}", ", ".join(f"{v:.2f}" for v in values), meets])
        rows.append(['target: "import sqlmodel" + 0.25 s', f"{target:.3f}", "", ""])
        print_grid([f"command (median of {args.reps} process runs)", "wall s", "runs", "meets target"], rows)
        profiled = [args.cli, "--db", str(db), "list"] if args.importtime == "list" else [args.cli, "--db", str(db), "show", experiment_id]
        import_profile(["-m", "experiment_runner", *profiled[1:]], env, args.top)


if __name__ == "__main__":
    main()
