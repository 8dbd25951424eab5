"""How the run summary and `show` word what the response cache saved."""

from experiment_runner.cli.caching import usage_line


def test_a_saving_is_priced_when_the_calls_had_a_price() -> None:
    assert usage_line(3, 0.0123, 2, 1) == "3 call(s) came from the response cache (2 target, 1 evaluator), saving $0.0123 (they cost $0 in this run)."


def test_calls_of_unpriced_models_never_read_as_saving_zero_dollars() -> None:
    line = usage_line(2, 0.0)
    assert line is not None and "$0.0000" not in line and "saving an unknown amount" in line


def test_no_line_without_a_hit() -> None:
    assert usage_line(0, 0.0) is None
