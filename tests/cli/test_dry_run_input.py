"""`run --input F --dry-run` (issue 21, item 7): the file is read in memory; nothing is stored, not even a store file."""

import json
import os
from pathlib import Path

from conftest import FIXTURES, dump

SAMPLE = FIXTURES / "ragtruth-sample.conversations.jsonl"
OTLP = FIXTURES / "openai-v2.otlp.jsonl"


def dry_run(run_cli, fake, *inputs: Path, extra: tuple[str, ...] = ()):
    args = [a for path in inputs for a in ("--input", str(path))]
    return run_cli("run", "--name", "d", "--model", "openai/gpt-4o-mini", "--api-base", fake.api_base, *args,
                   "--evaluator-model", "openai/gpt-4o", "--evaluator-api-base", fake.api_base, "--dry-run", *extra)


def test_no_store_file_is_created_and_the_estimate_is_the_stored_ones(run_cli, fake_llm, db_path: Path, tmp_path: Path) -> None:
    result = dry_run(run_cli, fake_llm, SAMPLE, OTLP, SAMPLE, extra=("--json",))
    assert result.exit_code == 0, result.stderr
    in_memory = json.loads(result.stdout)
    assert in_memory["items"] == 40 + 3 and in_memory["target_calls"] == 43  # the repeated file counts once
    assert not db_path.exists() and sorted(os.listdir(tmp_path)) == []  # no store, no -wal, no -shm
    assert fake_llm.request_count == 0
    text = dry_run(run_cli, fake_llm, SAMPLE)
    assert text.exit_code == 0 and "Nothing was stored or called." in text.stdout and not db_path.exists()
    # the same estimate as a dry run over the same conversations once imported
    assert run_cli("import", SAMPLE, OTLP).exit_code == 0
    stored = run_cli("run", "--name", "d", "--model", "openai/gpt-4o-mini", "--api-base", fake_llm.api_base, "--all",
                     "--evaluator-model", "openai/gpt-4o", "--evaluator-api-base", fake_llm.api_base, "--dry-run", "--json")
    assert json.loads(stored.stdout) == in_memory


def test_an_existing_store_is_left_as_it_was(run_cli, fake_llm, db_path: Path) -> None:
    assert run_cli("import", OTLP).exit_code == 0
    before = dump(db_path)
    assert dry_run(run_cli, fake_llm, SAMPLE).exit_code == 0
    assert dump(db_path) == before


def test_a_bad_input_file_is_reported_and_nothing_is_created(run_cli, fake_llm, db_path: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "messages": []}\nnot json\n')
    result = dry_run(run_cli, fake_llm, bad)
    assert result.exit_code == 2 and result.stderr.startswith(f"Error: {bad}:") and result.stdout == ""
    assert not db_path.exists()
