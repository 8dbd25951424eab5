"""A new user's check of the CLI (issues 20 and 24): id prefixes on every id, short prefixes, gate limits that
are not numbers, unknown costs and unknown labels in `gate`, help examples, `import` ids, `resume`'s key hint."""

import inspect
import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from factories import RAGTRUTH, build_finished, priced_and_unpriced_runs

from experiment_runner.cli import cli
from experiment_runner.engine.experiments import create_experiment
from experiment_runner.engine.spec import ExperimentSpec
from experiment_runner.ingest.importing import import_files
from experiment_runner.store import Store


def commands() -> Iterator[tuple[str, click.Command]]:
    context = click.Context(cli)
    for name in cli.list_commands(context):
        command = cli.get_command(context, name)
        assert command is not None
        yield name, command


def is_experiment_id(param: click.Parameter) -> bool:
    """An argument or option that takes an experiment id (`experiment_id`, `experiment_a`, `baseline_id`, ...)."""
    return bool(param.name) and (param.name.startswith("experiment") or param.name.endswith("_id"))


# Every experiment-id argument and option of every command, and a call giving it an 8-character prefix
# ({a}, {b}: the prefixes of two finished experiments). The call must work on the whole id it names.
PREFIX_CALLS = {
    ("show", "experiment_id"): ["show", "{a}"],
    ("export", "experiment_id"): ["export", "{a}", "-o", "{tmp}/a.json"],
    ("report", "experiment_id"): ["report", "{a}", "-o", "{tmp}/a.html"],
    ("report", "compare_id"): ["report", "{a}", "--compare", "{b}", "-o", "{tmp}/ab.html"],
    ("compare", "experiment_a"): ["compare", "{a}", "{b}", "--json"],
    ("compare", "experiment_b"): ["compare", "{a}", "{b}", "--json"],
    ("gate", "experiment_id"): ["gate", "{b}", "--baseline", "{a}", "--max", "issue_rate=1", "--format", "json"],
    ("gate", "baseline_id"): ["gate", "{b}", "--baseline", "{a}", "--max", "issue_rate=1", "--format", "json"],
    ("score", "experiment_id"): ["score", "{b}", "--against", "{a}", "--json"],
    ("score", "reference_id"): ["score", "{b}", "--against", "{a}", "--json"],
    ("resume", "experiment_id"): ["resume", "{a}"],
    ("reevaluate", "experiment_id"): ["reevaluate", "{a}", "--rules", "{tmp}/rules.json", "--dry-run"],
    ("worker", "experiment_id"): ["worker", "--experiment", "{a}"],
    ("delete", "experiment_id"): ["delete", "{b}"],  # last: it removes b
}


def test_every_experiment_id_parameter_is_covered_by_a_prefix_call() -> None:
    found = {(name, p.name) for name, command in commands() for p in command.params if is_experiment_id(p)}
    assert found == set(PREFIX_CALLS)  # a new id-taking parameter needs its prefix call here


@pytest.fixture
def two(store: Store) -> tuple[str, str]:
    """Two finished pass-through experiments over the same conversations (each with a spread of issues)."""
    return build_finished(store), build_finished(store)


def test_every_id_argument_and_option_resolves_a_prefix(run_cli, two: tuple[str, str], tmp_path: Path) -> None:
    a, b = two
    assert a[:8] != b[:8]
    (tmp_path / "rules.json").write_text('[{"label": "Leak", "regex": "sk-[A-Za-z0-9]+"}]')
    done: set[tuple[str, ...]] = set()
    for call in PREFIX_CALLS.values():
        args = tuple(arg.format(a=a[:8], b=b[:8], tmp=tmp_path) for arg in call)
        if args in done:
            continue
        done.add(args)
        result = run_cli(*args)
        assert result.exit_code == 0, (args, result.stderr)
        if args[0] == "gate":
            out = json.loads(result.stdout)
            assert (out["experiment_id"], out["baseline_id"]) == (b, a) and out["passed"]
        elif args[0] == "score":
            out = json.loads(result.stdout)
            assert (out["experiment_id"], out["against"]) == (b, a)
        elif args[0] == "compare":
            out = json.loads(result.stdout)
            assert (out["a"]["id"], out["b"]["id"]) == (a, b)
        elif args[0] == "delete":
            assert result.stdout.startswith(f"Deleted experiment {b} ")
        elif args[0] == "export":
            assert json.loads((tmp_path / "a.json").read_text())["experiment"]["id"] == a
        elif args[0] == "show":
            assert f"  id               {a}" in result.stdout
        elif args[0] == "resume":  # finished: nothing to run, and it says which experiment
            assert result.stdout == f"{a}\n" and f"Experiment {a} is already complete" in result.stderr


def test_score_against_with_a_full_id_takes_a_prefix_reference(run_cli, two: tuple[str, str]) -> None:
    a, b = two
    out = json.loads(run_cli("score", b, "--against", a[:6], "--json").stdout)
    assert (out["experiment_id"], out["against"]) == (b, a)


def test_a_prefix_under_four_characters_says_it_is_too_short(run_cli, two: tuple[str, str], db_path: Path) -> None:
    a, _ = two
    for given in (a[:1], a[:3]):
        for args in (["show", given], ["gate", given, "--max", "issue_rate=1"], ["gate", a, "--baseline", given, "--max", "issue_rate=1"]):
            result = run_cli(*args)
            assert (result.exit_code, result.stdout) == (2, ""), args
            assert result.stderr == f"Error: experiment id prefix {given!r} is too short: give at least 4 characters of the id\n"
    result = run_cli("show", "zz")  # no id starts with it (ids are hex): not found, in this store
    assert (result.exit_code, result.stderr) == (2, f"Error: no experiment with id 'zz' in store {db_path}\n")


@pytest.mark.parametrize("limit", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_a_gate_limit_must_be_a_finite_number(run_cli, two: tuple[str, str], limit: str) -> None:
    a, b = two
    for option, args in (("--max", []), ("--max-increase", ["--baseline", b])):
        result = run_cli("gate", a, *args, option, f"issue_rate={limit}")
        assert (result.exit_code, result.stdout) == (2, "")
        assert result.stderr == f"Error: {option} 'issue_rate={limit}': the limit must be a finite number, got {limit!r}\n"


@pytest.fixture
def costs(run_cli, fake_llm, tmp_path: Path) -> tuple[str, str]:
    return priced_and_unpriced_runs(run_cli, fake_llm, tmp_path, 3)


def test_an_unknown_cost_never_passes_a_cost_condition(run_cli, costs: tuple[str, str]) -> None:
    unpriced, priced = costs
    result = run_cli("gate", unpriced, "--max", "cost_per_1k=1", "--max", "total_input_tokens=1e9")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "FAIL  max cost_per_1k=1: the experiment's cost is unknown: no price for its 3 completed replies"
    assert lines[1].startswith("PASS  max total_input_tokens=1e+09: value ") and lines[2] == "gate failed: 1 of 2 check(s)"
    assert "unknown" in run_cli("compare", priced, unpriced).stdout  # as compare shows it
    ok = run_cli("gate", priced, "--max", "cost_per_1k=1000", "--format", "json")
    assert ok.exit_code == 0, ok.stdout
    value = json.loads(ok.stdout)["checks"][0]["value"]
    assert 0 < value <= 1000
    # with a baseline: an unknown cost on either side fails an increase condition
    for experiment, baseline, role in ((unpriced, priced, "experiment"), (priced, unpriced, "baseline")):
        result = run_cli("gate", experiment, "--baseline", baseline, "--max-increase", "cost_per_1k=1000")
        assert result.exit_code == 1
        assert result.stdout.splitlines()[0] == f"FAIL  max-increase cost_per_1k=1000: the {role}'s cost is unknown: no price for its 3 completed replies"
    assert run_cli("gate", priced, "--baseline", priced, "--max-increase", "cost_per_1k=0").exit_code == 0


def test_a_label_the_experiment_cannot_find_is_refused(run_cli, two: tuple[str, str], tmp_path: Path) -> None:
    a, b = two
    known = "its labels: Context Misattribution, Fabrication, Incorrect Refusal, Reasoning Error"
    for args, option in ((["--max", "label:Nope=0.1"], "--max 'label:Nope=0.1'"),
                         (["--baseline", b, "--max-increase", "label:fabrication=0"], "--max-increase 'label:fabrication=0'")):
        result = run_cli("gate", a, *args)
        assert (result.exit_code, result.stdout) == (2, "")
        whose = "the experiment or its baseline" if "--baseline" in args else "the experiment"
        name = option.split(":")[1].split("=")[0]  # Nope, fabrication (labels are case-sensitive)
        assert result.stderr == f"Error: {option}: {name!r} is not a label of {whose} ({known})\n"
    # a label of the set that no span carries is a rate of 0, not an error
    result = run_cli("gate", a, "--max", "label:Reasoning Error=0", "--max", "label:Fabrication=1")
    assert result.exit_code == 0, result.stdout + result.stderr


def test_rule_labels_are_labels_of_the_experiment(run_cli, tmp_path: Path) -> None:
    sample = tmp_path / "one.jsonl"
    sample.write_text(RAGTRUTH.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    rules = tmp_path / "rules.json"
    rules.write_text('[{"label": "Leak", "regex": "sk-[A-Za-z0-9]+"}]')
    run = run_cli("run", "--name", "rules", "--model", "openai/x", "--pass-through", "--input", sample, "--rules", rules)
    assert run.exit_code == 0, run.stderr
    experiment = run.stdout.split()[-1]
    assert run_cli("gate", experiment, "--max", "label:Leak=0").exit_code == 0
    result = run_cli("gate", experiment, "--max", "label:Fabrication=0")  # no evaluator: only the rules' labels
    assert result.stderr == "Error: --max 'label:Fabrication=0': 'Fabrication' is not a label of the experiment (its labels: Leak)\n"


def help_examples(command: click.Command) -> list[str]:
    """The example lines of a command's docstring (each starts with `experiment-runner`)."""
    doc = inspect.cleandoc(command.callback.__doc__ or "") if command.callback else ""
    return [line.strip() for line in doc.splitlines() if line.strip().startswith("experiment-runner ")]


@pytest.mark.parametrize("width", [60, 80, 200])
def test_every_help_example_stays_on_its_own_line(width: int) -> None:
    checked = 0
    for name, command in [("", cli), *commands()]:
        examples = help_examples(command)
        assert examples, f"{name or 'the root command'}: no example in its help"
        args = [name, "--help"] if name else ["--help"]
        shown = CliRunner().invoke(cli, args, terminal_width=width, catch_exceptions=False).stdout
        lines = [line.strip() for line in shown.splitlines()]
        for example in examples:
            assert example in lines, f"{name}: {example!r} is not a line of its own in:\n{shown}"
            checked += 1
    assert checked >= 20


def test_import_prints_each_id_once(run_cli, tmp_path: Path) -> None:
    line = RAGTRUTH.read_text(encoding="utf-8").splitlines()[0]
    other = RAGTRUTH.read_text(encoding="utf-8").splitlines()[1]
    twice = tmp_path / "twice.jsonl"
    twice.write_text("\n".join([line, other, line]) + "\n", encoding="utf-8")
    result = run_cli("import", twice)
    assert result.exit_code == 0, result.stderr
    first, second = json.loads(line)["id"], json.loads(other)["id"]
    assert result.stdout.splitlines() == [first, second]
    assert result.stderr == "Imported 3 conversation(s): 2 new, 0 already stored, 1 duplicate(s) in the input.\n"


def test_resume_names_the_stored_model_and_how_to_fix_a_missing_key(run_cli, store: Store) -> None:
    ids = import_files(store, [str(RAGTRUTH)]).ids[:2]
    spec = ExperimentSpec(name="needs a key", model="openai/gpt-4o-mini", conversation_ids=ids)
    experiment = create_experiment(store, spec, check_models=False)
    result = run_cli("resume", experiment[:8])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "Error: the experiment's stored model 'openai/gpt-4o-mini': OPENAI_API_KEY is not set "
        f"(or give `experiment-runner resume {experiment} --api-base URL` for a local server)\n"
    )
    assert "--model" not in result.stderr
    # `run` still names its own option
    run = run_cli("run", "--name", "x", "--model", "openai/gpt-4o-mini", "--all")
    assert run.exit_code == 2 and run.stderr.startswith("Error: --model 'openai/gpt-4o-mini': OPENAI_API_KEY is not set")

