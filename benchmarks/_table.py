"""Printing a benchmark's table: measure, measured value, and the ideal it is compared with."""

from collections.abc import Sequence


def print_table(rows: Sequence[tuple[str, str, str]], headers: tuple[str, str, str] = ("measure", "measured", "compared with")) -> None:
    """Left-aligned names, right-aligned measured values, then the target or ideal."""
    width = max(len(r[0]) for r in [headers, *rows])
    value_width = max(len(r[1]) for r in [headers, *rows])
    for name, value, ideal in [headers, *rows]:
        print(f"{name.ljust(width)}  {value.rjust(value_width)}  {ideal}")
