"""Small printing helpers shared by the commands."""

import json
from collections.abc import Callable, Sequence
from typing import Any

import click


def echo_json(data: Any) -> None:
    """Print `data` as indented JSON on stdout."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def output_option(help_text: str) -> Callable[[Any], Any]:
    """The `-o/--output FILE` option of commands that write a file (`-` is stdout; `files.write_text_atomic`
    refuses anything but a regular file, so no click path check here)."""
    return click.option("-o", "--output", metavar="FILE", default=None, help=help_text)


def usd(amount: float, known: str = "known") -> str:
    """A cost as a person reads it: `$0.0123`, `unknown`, or `at least $0.0100` when some calls had no price."""
    if known == "unknown":
        return "unknown"
    return ("at least " if known == "partial" else "") + f"${amount:,.4f}"
