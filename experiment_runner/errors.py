"""The project's exception types. The CLI turns them into one `Error: ...` line and an exit code."""

from collections.abc import Callable, Sequence


class Field(str):
    """An input named inside an error message, by its request-body name (`"api_base"`).

    The core does not know how its caller spells inputs: the CLI renders a `Field` as its option
    (`--api-base`), the REST API as the body field (`api_base`). See `BadInputError.render`.
    """


class ExperimentRunnerError(Exception):
    """Base of every error the tool reports to its user; exit status 1 (the work failed)."""

    exit_code = 1


class BadInputError(ExperimentRunnerError):
    """The user gave input we cannot use (a file, an option, a request body); exit status 2.

    `loc` names the offending field the way the REST API reports it (`("body", "name")`); `field` is that
    input's body name (`"model"`), and gives `loc` when it is not given. The message is text, or a sequence
    of text and `Field`s: `str(exc)` names fields as the API does, `render(...)` as its caller spells them.
    """

    exit_code = 2

    def __init__(self, message: str | Sequence[str], *, loc: tuple[str | int, ...] = (), field: str | None = None):
        self.parts: tuple[str, ...] = (message,) if isinstance(message, str) else tuple(message)
        self.field = field
        self.loc = loc or (("body", field) if field else ())
        super().__init__(self.render(str))

    def render(self, name: Callable[[str], str]) -> str:
        """The message with every `Field` spelled by `name` (the CLI passes field -> option)."""
        return "".join(name(part) if isinstance(part, Field) else part for part in self.parts)


class InputLimitError(BadInputError):
    """Input past a JSON limit (nesting depth, number size) or holding NaN/Infinity; exit 2, HTTP 400."""


class NotFoundError(BadInputError):
    """An id names nothing in the store (an experiment, a conversation); exit status 2."""


class StoreError(ExperimentRunnerError):
    """The database file cannot be opened or used (not SQLite, a directory, newer schema)."""

    exit_code = 2


class StoreFaultError(StoreError):
    """The store failed under a run or a command: disk full, file read-only, lock held too long; exit status 1."""

    exit_code = 1


class ExperimentBusyError(ExperimentRunnerError):
    """Another live runner holds the experiment's lease; exit status 1."""

    def __init__(self, experiment_id: str, pid: int, host: str, since: str):
        super().__init__(f"experiment {experiment_id} is being run by {pid} on {host} (since {since})")
        self.experiment_id, self.pid, self.host, self.since = experiment_id, pid, host, since


class LeaseLostError(ExperimentRunnerError):
    """This runner's lease was taken over (it stalled past the heartbeat timeout); it stops writing."""


class ModelCallError(ExperimentRunnerError):
    """A model call failed for good, after any retries.

    `retryable`: another try could help (rate limits, timeouts, a 5xx). `systematic`: every call to this
    endpoint will fail the same way (nothing listens, bad credentials, no such model), so the run stops
    instead of failing item after item. `format_rejected`: the server refused the `response_format`.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        systematic: bool = False,
        format_rejected: bool = False,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.systematic = systematic
        self.format_rejected = format_rejected


class RunStoppedError(ExperimentRunnerError):
    """A run stopped early on a systematic failure; the items not attempted stay pending (exit status 1)."""
