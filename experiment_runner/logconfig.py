"""`-v/--verbose`: the package's INFO log lines (retries, structured-output fallbacks, lease takeovers) on stderr.

Every module logs through `logging.getLogger(__name__)`, under the `experiment_runner` logger. Without
`-v` nothing is configured, so only warnings reach stderr (Python's last-resort handler), as before.
`serve` and `view` route the same loggers through uvicorn's handler at INFO (`server.launch`).
"""

import logging
import sys
from typing import TextIO

PACKAGE = "experiment_runner"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


class StderrHandler(logging.StreamHandler[TextIO]):
    """A handler writing to whatever `sys.stderr` is at each line (click's test runner swaps it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


def configure(verbose: bool) -> None:
    """With `verbose`, the package's loggers print INFO and above on stderr through one handler; without, none is set."""
    package = logging.getLogger(PACKAGE)
    for handler in [h for h in package.handlers if isinstance(h, StderrHandler)]:
        package.removeHandler(handler)  # configured again (in-process tests): one handler at most
    if verbose:
        package.addHandler(StderrHandler())
        package.setLevel(logging.INFO)
    else:
        package.setLevel(logging.NOTSET)
