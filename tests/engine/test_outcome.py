"""A run's outcome (issue 22): one value, from the run's Progress, that the CLI and the server both render."""

from collections import Counter

import pytest

from experiment_runner.engine.outcome import Ending, RunOutcome
from experiment_runner.engine.progress import Progress
from experiment_runner.errors import RunStoppedError

ID = "4f6c0e1a"


def outcome(**counts: object) -> RunOutcome:
    return RunOutcome.of(ID, Progress(**counts))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("progress", "ending", "exit_code", "next_command"),
    [
        ({"total": 0}, Ending.NOTHING_LEFT, 0, None),
        ({"total": 3, "completed": 3}, Ending.COMPLETED, 0, None),
        ({"total": 3, "completed": 2, "failed": 1}, Ending.COMPLETED, 0, f"experiment-runner show {ID}"),
        ({"total": 2, "failed": 2}, Ending.FAILED, 1, f"experiment-runner resume {ID} --retry-failed"),
        ({"total": 5, "completed": 1, "budget_reached": True}, Ending.BUDGET, 1, f"experiment-runner resume {ID} --max-cost AMOUNT"),
        ({"total": 5, "completed": 1, "interrupted": True}, Ending.INTERRUPTED, 130, f"experiment-runner resume {ID}"),
        # a systematic failure wins over the budget and an interruption, as `runstate.stop_of` records it
        ({"total": 5, "failed": 5, "stopped_by": "x", "budget_reached": True, "interrupted": True}, Ending.SYSTEMATIC, 1,
         f"experiment-runner resume {ID}"),
    ],
)
def test_each_ending_has_its_exit_status_and_next_command(progress: dict[str, object], ending: Ending, exit_code: int,
                                                          next_command: str | None) -> None:
    result = outcome(**progress)
    assert result.ending is ending and result.exit_code == exit_code and result.next_command() == next_command
    assert (result.error() is not None) == (exit_code == 1)


def test_the_words_are_the_same_for_the_cli_and_the_server() -> None:
    budget = outcome(total=5, completed=2, budget_reached=True, budget_usd=0.5, spent_usd=0.25, spent_before_usd=0.3)
    verdict = f"budget of $0.5 reached after 2 items ($0.5500 spent); to go on: experiment-runner resume {ID} --max-cost AMOUNT"
    assert budget.verdict() == verdict and str(budget.error()) == verdict  # earlier runs' spend counts
    assert budget.describe() == "5 items run: 2 completed, 0 failed, 3 not finished; " + verdict

    failing = outcome(total=4, completed=1, failed=3, evaluations_failed=1, failure_reasons=Counter({"HTTP 400": 2, "timeout": 1}))
    assert failing.counts() == "4 items run: 1 completed, 3 failed, 1 evaluation(s) failed"
    assert failing.verdict() == f"3 item(s) failed, most often: HTTP 400 (2x); see `experiment-runner show {ID}`"

    stopped = outcome(total=3, stopped_by="target model m: cannot reach 127.0.0.1:9: connection refused")
    assert isinstance(stopped.error(), RunStoppedError)
    assert str(stopped.error()).startswith("stopped: target model m: cannot reach 127.0.0.1:9: connection refused; the items not run")

    assert outcome(total=1, completed=1).describe() == "1 item run: 1 completed, 0 failed"
    assert outcome(total=0).describe() == "nothing left to run"
