"""How a run ended, as one value (`RunOutcome`) that the CLI and the server both render.

A run ends in one of a few ways (`Ending`): nothing was left to run, every item ran (some may have
failed), every item failed, the budget stopped it, Ctrl-C interrupted it, or a systematic failure (an
endpoint that cannot work) stopped it. The outcome carries the counts, the words for what happened and
the command to run next, so `run`/`resume`/`reevaluate` (their closing lines, error line and exit status)
and the server's log line say the same thing.
"""

from dataclasses import dataclass
from enum import StrEnum

from experiment_runner.engine.progress import Progress
from experiment_runner.errors import ExperimentRunnerError, RunStoppedError


class Ending(StrEnum):
    """How a run ended (precedence as `runstate.stop_of`: systematic, then budget, then interrupted)."""

    NOTHING_LEFT = "nothing_left"  # every item was done already
    COMPLETED = "completed"  # every item ran; some may have failed
    FAILED = "failed"  # every item ran, and every one failed
    BUDGET = "budget"  # the budget stopped it: the rest stay pending
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: the rest stay pending
    SYSTEMATIC = "systematic"  # an endpoint that cannot work stopped it: the rest stay pending


def plural(count: int, word: str, words: str | None = None) -> str:
    """`1 item`, `2 items`; `words` for an irregular plural."""
    return f"{count} {word}" if count == 1 else f"{count} {words or word + 's'}"


@dataclass(frozen=True)
class RunOutcome:
    """What a run did and how it ended, with the next command to run."""

    experiment_id: str
    ending: Ending
    total: int
    completed: int
    failed: int
    evaluations_failed: int
    spent_usd: float  # what the experiment's results cost, earlier runs included (the budget counts them all)
    budget_usd: float | None
    stopped_by: str | None  # the systematic failure: "target model M at host:port: reason"
    most_common_failure: tuple[str, int] | None  # this run's most frequent item failure and its count
    others_done: int = 0  # items of `total` that other workers (processes sharing the run) finished

    @classmethod
    def of(cls, experiment_id: str, progress: Progress) -> "RunOutcome":
        """The outcome of a run that returned its `Progress`."""
        if progress.total == 0:
            ending = Ending.NOTHING_LEFT
        elif progress.stopped_by:
            ending = Ending.SYSTEMATIC
        elif progress.budget_reached:
            ending = Ending.BUDGET
        elif progress.interrupted:
            ending = Ending.INTERRUPTED
        elif progress.failed and progress.failed == progress.total - progress.others_done:
            ending = Ending.FAILED
        else:
            ending = Ending.COMPLETED
        common = progress.failure_reasons.most_common(1)
        return cls(
            experiment_id, ending, progress.total, progress.completed, progress.failed, progress.evaluations_failed,
            progress.spent_before_usd + progress.spent_usd, progress.budget_usd, progress.stopped_by,
            common[0] if common else None, progress.others_done,
        )

    @property
    def done(self) -> int:
        return self.completed + self.failed

    def counts(self) -> str:
        """`40 items run: 38 completed, 2 failed, 1 evaluation(s) failed, 3 not finished`."""
        if self.ending is Ending.NOTHING_LEFT:
            return "nothing left to run"
        parts = [f"{self.completed} completed", f"{self.failed} failed"]
        if self.evaluations_failed:
            parts.append(f"{self.evaluations_failed} evaluation(s) failed")
        if self.others_done:
            parts.append(f"{self.others_done} done by other workers")
        if self.total > self.done + self.others_done:
            parts.append(f"{self.total - self.done - self.others_done} not finished")
        return f"{plural(self.total, 'item')} run: " + ", ".join(parts)

    def next_command(self) -> str | None:
        """What to run next when the run left something to do or to look at."""
        resume = f"experiment-runner resume {self.experiment_id}"
        return {
            Ending.BUDGET: f"{resume} --max-cost AMOUNT",
            Ending.INTERRUPTED: resume,
            Ending.SYSTEMATIC: resume,
            Ending.FAILED: f"{resume} --retry-failed",
            Ending.COMPLETED: f"experiment-runner show {self.experiment_id}" if self.failed else None,
        }.get(self.ending)

    def verdict(self) -> str | None:
        """The line that says how the run ended and what to do next; None when it simply finished."""
        common = f", most often: {self.most_common_failure[0]} ({self.most_common_failure[1]}x)" if self.most_common_failure else ""
        show = f"`experiment-runner show {self.experiment_id}`"
        if self.ending is Ending.BUDGET:
            cap = f"${self.budget_usd:g}" if self.budget_usd is not None else "the budget"
            return f"budget of {cap} reached after {plural(self.done, 'item')} (${self.spent_usd:.4f} spent); to go on: {self.next_command()}"
        if self.ending is Ending.INTERRUPTED:
            return f"Interrupted. Continue with: {self.next_command()}"
        if self.ending is Ending.SYSTEMATIC:
            return (f"stopped: {self.stopped_by}; the items not run stay pending: fix it, then `{self.next_command()}`"
                    " (with --api-base or --evaluator-api-base URL to change an endpoint)")
        if self.ending is Ending.FAILED:
            return f"every item failed{common}; see {show}, then `{self.next_command()}`"
        if self.ending is Ending.COMPLETED and self.failed:
            return f"{self.failed} item(s) failed{common}; see {show}"
        return None

    def describe(self) -> str:
        """The whole outcome on one line (the server's log): the counts, then the verdict if any."""
        verdict = self.verdict()
        return self.counts() + (f"; {verdict}" if verdict else "")

    @property
    def exit_code(self) -> int:
        """The CLI's exit status: 130 interrupted, 1 when the run stopped early or every item failed, else 0."""
        if self.ending is Ending.INTERRUPTED:
            return 130
        return 1 if self.ending in (Ending.BUDGET, Ending.SYSTEMATIC, Ending.FAILED) else 0

    def error(self) -> ExperimentRunnerError | None:
        """The error a failed run ends with (exit 1, its verdict as the `Error:` line), or None."""
        if self.exit_code != 1:
            return None
        verdict = self.verdict() or ""
        return RunStoppedError(verdict) if self.ending is Ending.SYSTEMATIC else ExperimentRunnerError(verdict)
