"""The one checked JSON parser (issue 21 items 8 and 9): depth, number size, NaN/Infinity, strict output."""

import json
import math

import pytest

from experiment_runner import jsonlimits
from experiment_runner.jsonlimits import MAX_DEPTH, JSONLimitError


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (nested(MAX_DEPTH + 1), 1, f"nested deeper than {MAX_DEPTH} levels"),
        (nested(100_000), 1, f"nested deeper than {MAX_DEPTH} levels"),
        ('{"a":\n\n' + nested(5000) + "}", 3, f"nested deeper than {MAX_DEPTH} levels"),
        ("[1" + "1" * 5000 + "]", 1, "(5001 characters) is out of range (integers must fit in 64 bits)"),
        ("[9223372036854775808]", 1, "integer 9223372036854775808 is out of range"),
        ("[-9223372036854775809]", 1, "out of range"),
        ('{"x": 1e999}', 1, "number 1e999 is too large (numbers must be finite)"),
        ('{"x":\nNaN}', 2, "NaN is not allowed (NaN and Infinity are not JSON numbers)"),
        ("[Infinity]", 1, "Infinity is not allowed"),
        ("[-Infinity]", 1, "-Infinity is not allowed"),
    ],
)
def test_past_a_limit_is_refused_with_its_line(text: str, line: int, message: str) -> None:
    with pytest.raises(JSONLimitError) as caught:
        jsonlimits.loads(text)
    assert caught.value.lineno == line and message in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        nested(MAX_DEPTH),
        "[9223372036854775807, -9223372036854775808, 1e308, 0.12345678901234567890123, 1.5e-400, 12345678901234567890.5]",
        json.dumps({"s": "NaN Infinity [[[[ 1e999 " + "[" * 200 + " \\\" 9" * 30 + "9" * 100}),  # inside strings nothing counts
    ],
)
def test_within_the_limits_parses_as_json_does(text: str) -> None:
    assert jsonlimits.loads(text) == json.loads(text)


def test_bad_syntax_is_still_a_decode_error_and_an_unterminated_string_stays_linear() -> None:
    with pytest.raises(json.JSONDecodeError):
        jsonlimits.loads('{"a": ')
    with pytest.raises(json.JSONDecodeError):
        jsonlimits.loads('"' + '\\"[' * 200_000)  # would be quadratic if each quote restarted the string scan


def test_decoded_values_are_checked_iteratively() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(JSONLimitError, match="nested deeper"):
        jsonlimits.check_value(deep)
    for bad in (float("nan"), {"a": [float("inf")]}, 10**30):
        with pytest.raises(JSONLimitError):
            jsonlimits.check_value(bad)
    jsonlimits.check_value({"ok": [1, 2.5, True, None, "x", 2**63 - 1]})


def test_to_int64_reads_otlp_integers_without_int_limits() -> None:
    assert jsonlimits.to_int64("1796160217412293892") == 1796160217412293892
    with pytest.raises(JSONLimitError, match="out of range"):
        jsonlimits.to_int64("9" * 5000)
    with pytest.raises(ValueError):
        jsonlimits.to_int64("12a")


def test_dumps_never_writes_nan_and_stored_nan_reads_as_null() -> None:
    text = jsonlimits.dumps({"cost": float("nan"), "list": [float("inf"), 1.5]})
    assert json.loads(text) == {"cost": None, "list": [None, 1.5]}
    assert jsonlimits.loads_stored('{"a": NaN, "b": [Infinity, -Infinity, 2]}') == {"a": None, "b": [None, None, 2]}
    assert not math.isnan(jsonlimits.loads("[0.5]")[0])
