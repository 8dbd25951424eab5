"""The one checked JSON parser: every JSON text the product reads goes through `loads` (or `check_value`).

Limits, the same everywhere (import files, request bodies, JSON held in strings such as tool-call
`arguments` or OTLP attribute values, model replies):
- nesting: at most `MAX_DEPTH` levels of objects and arrays;
- integers: within 64 bits (`-2**63 .. 2**63-1`), so no 5000-digit number reaches `int()` or SQLite;
- floats: finite; the `NaN`, `Infinity` and `-Infinity` words are refused (they are not JSON).
`loads` parses with hooks on every number and a depth check of the result (as fast as plain
`json.loads`); only when something is past a limit does it scan the raw text (`check_text`, a regular
expression that skips strings) to name the line. A 100,000-deep array stops at the parser's recursion
guard, never at Python's int-digit limit or an uncaught `RecursionError`.
`dumps` writes strict JSON: it never writes NaN or Infinity (a non-finite float becomes null).
Pure functions; a limit raises `JSONLimitError` (a `ValueError`), bad syntax `json.JSONDecodeError`.
"""

import json
import math
import re
from typing import Any

MAX_DEPTH = 64  # deepest nesting of objects and lists (the outermost value is level 1)
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_INT_LITERAL_CHARS = 20  # the longest in-range integer literal: "-9223372036854775808"

# Outside strings: brackets, the non-JSON words, and the numbers that need a closer look (an integer part
# of 19+ digits, or an exponent of 3+ digits). Strings are matched whole, so nothing inside them counts.
_TOKENS = re.compile(
    r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)'  # an unterminated string runs to the end: the scan stays linear
    r"|[\[\]{}]"
    r"|NaN|-?Infinity"
    r"|(?<![\w.+-])-?(?:\d{19,}(?:\.\d*)?(?:[eE][-+]?\d+)?|\d+(?:\.\d*)?[eE][-+]?\d{3,})",
    re.DOTALL,
)


class JSONLimitError(ValueError):
    """A JSON text or value passes a limit (depth, number size) or holds NaN/Infinity; `lineno` when known."""

    def __init__(self, message: str, lineno: int | None = None):
        super().__init__(message)
        self.msg = message
        self.lineno = lineno


def deeper_than() -> str:
    """The message for nesting past the limit (one wording everywhere)."""
    return f"nested deeper than {MAX_DEPTH} levels"


def _line(text: str | bytes, pos: int) -> int:
    return (text.count(b"\n", 0, pos) if isinstance(text, bytes) else text.count("\n", 0, pos)) + 1


def check_text(text: str) -> None:
    """Refuse (`JSONLimitError` with the line) JSON text that nests too deep, or holds a number past the limits."""
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        first = token[0]
        if first == '"':
            continue
        if first in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise JSONLimitError(deeper_than(), _line(text, match.start()))
        elif first in "]}":
            depth -= 1
        else:
            problem = number_problem(token)
            if problem:
                raise JSONLimitError(problem, _line(text, match.start()))


def number_problem(literal: str) -> str | None:
    """Why a JSON number literal (or NaN/Infinity word) is refused, or None when it is fine."""
    if literal.lstrip("-") in ("NaN", "Infinity"):
        return f"{literal} is not allowed (NaN and Infinity are not JSON numbers)"
    if not any(c in literal for c in ".eE"):
        if len(literal) > _INT_LITERAL_CHARS or not INT_MIN <= int(literal) <= INT_MAX:
            return f"integer {short(literal)} is out of range (integers must fit in 64 bits)"
        return None
    if not math.isfinite(float(literal)):
        return f"number {short(literal)} is too large (numbers must be finite)"
    return None


def short(value: Any, width: int = 40) -> str:
    """A value's text (repr for non-strings) cut to `width` characters, for error messages."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else f"{text[: width - 1]}… ({len(text)} characters)"


def _refuse_constant(word: str) -> Any:
    raise JSONLimitError(number_problem(word) or f"{word} is not allowed")


def _checked_int(literal: str) -> int:
    problem = number_problem(literal) if len(literal) >= 19 else None
    if problem:
        raise JSONLimitError(problem)
    return int(literal)


def _checked_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise JSONLimitError(f"number {short(literal)} is too large (numbers must be finite)")
    return value


def check_depth(value: Any, depth: int = 1) -> None:
    """Refuse (`JSONLimitError`) a decoded value that nests past `MAX_DEPTH`, counting `value` as level `depth`."""
    if type(value) in (dict, list) and _too_deep(value, depth):
        raise JSONLimitError(deeper_than())


def _too_deep(value: Any, depth: int = 1) -> bool:
    """Whether a parsed value nests past `MAX_DEPTH` (a walk level by level over containers only)."""
    level, containers = depth, [value]
    while containers:
        if level > MAX_DEPTH:
            return True
        inner = []
        for container in containers:
            for item in container.values() if type(container) is dict else container:
                if type(item) is dict or type(item) is list:
                    inner.append(item)
        level, containers = level + 1, inner
    return False


def loads(text: str | bytes) -> Any:
    """`json.loads` within the limits: `JSONLimitError` (with `lineno`) past one, `json.JSONDecodeError` for bad syntax."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8-sig")  # UnicodeDecodeError, as json.loads would raise
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_int=_checked_int, parse_float=_checked_float)
    except (RecursionError, JSONLimitError) as exc:
        check_text(text)  # names the limit and its line
        raise exc if isinstance(exc, JSONLimitError) else JSONLimitError(deeper_than()) from None
    if type(value) in (dict, list) and _too_deep(value):
        check_text(text)
        raise JSONLimitError(deeper_than())
    return value


def check_value(value: Any, depth: int = 1) -> None:
    """Refuse a decoded value (`JSONLimitError`) that nests past `MAX_DEPTH` (counting from `depth`) or holds
    a non-finite float or an integer out of the 64-bit range. Iterative: any depth is safe to check."""
    pending: list[tuple[Any, int]] = [(value, depth)]
    while pending:
        current, level = pending.pop()
        if isinstance(current, dict | list):
            if level > MAX_DEPTH:
                raise JSONLimitError(deeper_than())
            items = current.values() if isinstance(current, dict) else current
            pending.extend((item, level + 1) for item in items)
        elif isinstance(current, float) and not math.isfinite(current):
            raise JSONLimitError(f"{current} is not allowed (NaN and Infinity are not JSON numbers)")
        elif isinstance(current, int) and not isinstance(current, bool) and not INT_MIN <= current <= INT_MAX:
            raise JSONLimitError("an integer is out of range (integers must fit in 64 bits)")


def to_int64(value: Any) -> int:
    """An integer given as a JSON number or a decimal string (OTLP's int64 encoding), within 64 bits.

    `TypeError`/`ValueError` for something that is not an integer, `JSONLimitError` for one out of range."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    if isinstance(value, str):
        if len(value.strip()) > _INT_LITERAL_CHARS:
            raise JSONLimitError(f"integer {short(value)} is out of range (integers must fit in 64 bits)")
        value = int(value)
    if not isinstance(value, int):
        raise TypeError(f"not an integer: {short(value)}")
    if not INT_MIN <= value <= INT_MAX:
        raise JSONLimitError(f"integer {short(str(value))} is out of range (integers must fit in 64 bits)")
    return value


def prefixed(exc: ValueError, prefix: str) -> ValueError:
    """`exc` with `prefix: ` in front of its message, keeping whether it is a limit (for 400 vs 422, exit codes)."""
    if isinstance(exc, JSONLimitError):
        return JSONLimitError(f"{prefix}: {exc}", exc.lineno)
    return ValueError(f"{prefix}: {exc}")


def sanitized(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (for rows stored before NaN was refused)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: sanitized(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitized(v) for v in value]
    return value


def loads_stored(text: str) -> Any:
    """A JSON column the store wrote: no limits (it passed them on the way in), but a NaN or Infinity that an
    older release stored reads as null, so nothing the product writes from it contains one."""
    return json.loads(text, parse_constant=lambda _word: None)


def dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps` that never writes NaN or Infinity: strict, and a non-finite float written as null."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(sanitized(value), allow_nan=False, **kwargs)
