"""Durations (Go-style strings, one canonical form) and five-field cron validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orlojd.core.cron import CronError, validate_cron
from orlojd.core.desired import build_desired
from orlojd.core.digest import digest
from orlojd.core.durations import DurationError, format_ms, parse_ms
from orlojd.core.manifests.agents import Agent
from orlojd.core.manifests.registry import validate_object

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None)
YEAR_MS = 366 * 24 * 3_600_000

# -- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("1h30m", 5_400_000),
        ("1m30s", 90_000),
        ("1.5s", 1_500),
        ("1.5h", 5_400_000),
        ("0", 0),
        ("0s", 0),
        ("  2s ", 2_000),
        ("1h1ms", 3_600_001),
        ("90m", 5_400_000),
        ("8784h", YEAR_MS),
    ],
)
def test_parse_ms(text: str, ms: int) -> None:
    assert parse_ms(text) == ms


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (250, "250ms"),
        (1_000, "1s"),
        (60_000, "1m"),
        (90_000, "1m30s"),
        (3_600_000, "1h"),
        (3_600_001, "1h1ms"),
        (5_400_000, "1h30m"),
        (93_784_005, "26h3m4s5ms"),
    ],
)
def test_format_ms(ms: int, text: str) -> None:
    assert format_ms(ms) == text


@pytest.mark.parametrize(
    ("one", "other"),
    [("60s", "1m"), ("90m", "1h30m"), ("1000ms", "1s"), ("0.5m", "30s"), ("3600s", "1h"), ("1m60s", "2m")],
)
def test_equal_durations_normalise_alike(one: str, other: str) -> None:
    assert format_ms(parse_ms(one)) == format_ms(parse_ms(other))


def test_60s_and_1m_give_the_same_object_digest() -> None:
    def agent(timeout: str) -> Agent:
        result = validate_object(
            {"kind": "Agent", "metadata": {"name": "a"}, "spec": {"model": "gpt-4", "limits": {"timeout": timeout}}}
        )
        assert isinstance(result.obj, Agent), result.problems
        return result.obj

    assert agent("60s").spec.limits.timeout == "1m"
    assert digest(agent("60s")) == digest(agent("1m")) == digest(agent("60000ms"))
    assert digest(agent("61s")) != digest(agent("1m"))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "abc",
        "5",
        "5 s",
        "1d",
        "1w",
        "-1s",
        "1m30",
        "s",
        "ms",
        "1h-1m",
        "1e3s",
        "1S",
        "1m 30s",
        "8785h",
        "1,5s",
        "0x10s",
        "1h1h1x",
    ],
)
def test_bad_duration_strings_raise_duration_error(text: str) -> None:
    with pytest.raises(DurationError):
        parse_ms(text)


def test_duration_error_is_a_value_error_with_a_usable_message() -> None:
    with pytest.raises(ValueError, match=r"invalid duration '1d'; use a value such as"):
        parse_ms("1d")
    with pytest.raises(DurationError, match="longer than a year"):
        parse_ms("9000h")


@PROPERTY
@given(st.integers(min_value=0, max_value=YEAR_MS))
def test_format_then_parse_round_trips(ms: int) -> None:
    text = format_ms(ms)
    assert parse_ms(text) == ms
    assert format_ms(parse_ms(text)) == text


DURATION_PARTS = st.lists(
    st.tuples(st.integers(min_value=0, max_value=500), st.sampled_from(["h", "m", "s", "ms"])),
    min_size=1,
    max_size=4,
)


@PROPERTY
@given(DURATION_PARTS)
def test_any_written_duration_normalises_to_a_fixed_point(parts: list[tuple[int, str]]) -> None:
    text = "".join(f"{count}{unit}" for count, unit in parts)
    scale = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
    assert parse_ms(text) == sum(count * scale[unit] for count, unit in parts)
    canonical = format_ms(parse_ms(text))
    assert parse_ms(canonical) == parse_ms(text)
    assert format_ms(parse_ms(canonical)) == canonical


def backoff_result(value: str) -> tuple[str | None, list[str]]:
    text = f"kind: Agent\nmetadata: {{name: a}}\nspec:\n  model: gpt-4\n  retry: {{backoff: {value}}}\n"
    desired = build_desired([("a.yaml", text.encode())], resolve=False)
    found = [e.message for e in desired.errors]
    if not desired.objects:
        return None, found
    [loaded] = desired.objects.values()
    assert isinstance(loaded.obj, Agent)
    return loaded.obj.spec.retry.backoff.initial, found


def test_duration_field_accepts_a_number_of_seconds() -> None:
    assert backoff_result("90") == ("1m30s", [])
    assert backoff_result("1.5") == ("1s500ms", [])


def test_duration_field_reports_a_bad_string() -> None:
    value, found = backoff_result("soon")
    assert value is None and found == ["invalid duration 'soon'; use a value such as 250ms, 30s, 5m or 1h30m"]


@pytest.mark.parametrize("value", ["-5", "31622401", "1.0e+12"])
def test_numeric_duration_out_of_range_is_an_error(value: str) -> None:
    stored, found = backoff_result(value)
    assert stored is None and found, f"accepted as {stored!r}"


def test_infinite_duration_is_a_diagnostic_not_an_exception() -> None:
    stored, found = backoff_result(".inf")
    assert stored is None and found


# -- cron -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "normal"),
    [
        ("* * * * *", "* * * * *"),
        ("0 2 * * *", "0 2 * * *"),
        ("*/15 9-17 * * mon-fri", "*/15 9-17 * * mon-fri"),
        ("0 0 1 jan,jul *", "0 0 1 jan,jul *"),
        ("0 0 * * 7", "0 0 * * 7"),
        ("5,10,15 * * * *", "5,10,15 * * * *"),
        ("0 9 * * 1-5/2", "0 9 * * 1-5/2"),
        ("0  9 *   * *", "0 9 * * *"),
        ("0 0 * JAN MON", "0 0 * jan mon"),
        ("59 23 31 12 6", "59 23 31 12 6"),
        (" 0 0 * * * ", "0 0 * * *"),
    ],
)
def test_good_cron_expressions(expression: str, normal: str) -> None:
    assert validate_cron(expression) == normal


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day of month"),
        ("* * 32 * *", "day of month"),
        ("* * * 13 *", "month"),
        ("* * * foo *", "month"),
        ("* * * * 8", "day of week"),
        ("* * * * funday", "day of week"),
        ("*/0 * * * *", "minute"),
        ("5-1 * * * *", "minute"),
        ("? * * * *", "minute"),
        ("* 1- * * *", "hour"),
        ("mon * * * *", "minute"),
        ("* * L * *", "day of month"),
        ("* * * * sat-sun", "day of week"),
        ("0 0 30 2 *", "day of month"),  # well formed, but never fires
        ("0 0 31 4,6,9,11 *", "day of month"),
        ("0 0 30,31 feb */2", "day of month"),
    ],
)
def test_bad_cron_names_the_field(expression: str, field: str) -> None:
    with pytest.raises(CronError) as caught:
        validate_cron(expression)
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize("expression", ["", "* * * *", "* * * * * *", "@daily", "0 0 * * * 2026"])
def test_cron_needs_five_fields(expression: str) -> None:
    with pytest.raises(CronError, match="exactly 5 fields"):
        validate_cron(expression)


def test_a_cron_that_never_fires_says_why() -> None:
    with pytest.raises(CronError) as caught:
        validate_cron("0 0 31 4,6 *")
    assert str(caught.value) == "day of month: 31 never occurs in April or June, so this schedule would never fire"
    # With day-of-week restricted too, either may match (Vixie): every Monday in February.
    assert validate_cron("0 0 30 2 1") == "0 0 30 2 1"
    assert validate_cron("0 0 29 2 *") == "0 0 29 2 *"  # leap years


def test_cron_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="hour: 25 is outside 0-23"):
        validate_cron("0 25 * * *")
