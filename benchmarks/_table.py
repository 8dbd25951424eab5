"""Printing a benchmark's table: measure, measured value, and the ideal it is compared with."""

from collections.abc import Sequence


def print_table(rows: Sequence[tuple[str, str, str]], headers: tuple[str, str, str] = ("measure", "measured", "compared with")) -> None:
    """Left-aligned names, right-aligned measured values, then the target or ideal."""
    width = max(len(r[0]) for r in [headers, *rows])
    value_width = max(len(r[1]) for r in [headers, *rows])
    for name, value, ideal in [headers, *rows]:
        print(f"{name.ljust(width)}  {value.rjust(value_width)}  {ideal}")


def print_grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Markdown pipe table (readable in a terminal, pasteable into README.md); first column left, others right."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    print(line(headers))
    print("|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|")
    for row in rows:
        print(line(row))
