"""Time: aware values only, UTC, strict RFC 3339, and the adapters' clocks."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest
from helpers import T0, at

from workstate import (
    InvalidInputError,
    ManualClock,
    Precision,
    SystemClock,
    ensure_utc,
    format_time,
    parse_time,
    to_pendulum,
)
from workstate._time import EARLIEST, LATEST, resume_manual_clock, saturating_add, truncate


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-07-01T08:15:06.120394Z", dt.datetime(2026, 7, 1, 8, 15, 6, 120394, tzinfo=dt.UTC)),
        ("2026-07-01t08:15:06z", dt.datetime(2026, 7, 1, 8, 15, 6, tzinfo=dt.UTC)),
        ("2026-07-01T10:15:06.5+02:00", dt.datetime(2026, 7, 1, 8, 15, 6, 500000, tzinfo=dt.UTC)),
        ("2026-07-01T08:15:06-00:00", dt.datetime(2026, 7, 1, 8, 15, 6, tzinfo=dt.UTC)),
    ],
)
def test_parse_accepts_rfc3339(text: str, expected: dt.datetime) -> None:
    value = parse_time(text)
    assert value == expected
    assert value.tzinfo is dt.UTC


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("2026-07-01T08:15:06", "no UTC offset"),
        ("2026-07-01 08:15:06", "no UTC offset"),
        ("2026-07-01", "not an RFC 3339"),
        ("2026-07-01T08:15:06+0200", "not an RFC 3339"),
        ("2026-07-01T08:15:60Z", "not a valid"),
        ("", "not an RFC 3339"),
    ],
)
def test_parse_rejects(text: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_time(text, key="when")
    assert info.value.key == "when"
    assert words in info.value.message
    assert info.value.status == 400


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(InvalidInputError, match="must be a string"):
        parse_time(5)


def test_format_round_trips() -> None:
    t = dt.datetime(2026, 7, 1, 8, 15, 6, tzinfo=dt.UTC)
    assert format_time(t) == "2026-07-01T08:15:06.000000Z"
    assert parse_time(format_time(t)) == t
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert format_time(t.astimezone(plus2), Precision.SECONDS) == "2026-07-01T08:15:06Z"


def test_ensure_utc() -> None:
    assert ensure_utc(T0) is T0
    p = pendulum.datetime(2026, 7, 1, 10, 15, tz="Europe/Paris")
    value = ensure_utc(p)
    assert type(value) is dt.datetime
    assert value == p
    assert value.tzinfo is dt.UTC
    with pytest.raises(InvalidInputError, match="naive"):
        ensure_utc(dt.datetime(2026, 7, 1))
    with pytest.raises(InvalidInputError, match="got date"):
        ensure_utc(dt.date(2026, 7, 1))


def test_truncate() -> None:
    t = at(1.5)
    assert truncate(t, Precision.SECONDS) == at(1)
    assert truncate(t, Precision.MICROSECONDS) is t


def test_to_pendulum() -> None:
    assert to_pendulum(T0) == pendulum.datetime(2026, 7, 1, 8, 15, tz="UTC")


def test_system_clock_is_utc_and_aware() -> None:
    now = SystemClock().now()
    assert now.tzinfo is dt.UTC
    assert abs((dt.datetime.now(dt.UTC) - now).total_seconds()) < 60


def test_manual_clock() -> None:
    clock = ManualClock(T0)
    assert clock.now() == T0
    assert clock.advance(1.5) == at(1.5)
    assert clock.set(at(3)) == at(3) == clock.now()
    with pytest.raises(InvalidInputError, match="never moves backwards"):
        clock.set(at(2))
    for bad in (-1, float("inf"), float("nan"), True, "1"):
        with pytest.raises(InvalidInputError) as info:
            clock.advance(bad)  # type: ignore[arg-type]
        assert info.value.key == "advance_seconds"
    assert clock.now() == at(3)


def test_times_past_the_calendar_are_400_not_overflow() -> None:
    with pytest.raises(InvalidInputError, match="years 1-9999") as info:
        parse_time("9999-12-31T23:59:59-01:00", key="t")
    assert info.value.key == "t"
    with pytest.raises(InvalidInputError):
        parse_time("0001-01-01T00:00:00+01:00")
    clock = ManualClock(T0)
    for seconds in (1e300, 1e12):
        with pytest.raises(InvalidInputError, match="past the year 9999") as caught:
            clock.advance(seconds)
        assert caught.value.key == "advance_seconds"
    assert clock.now() == T0


_SECOND = dt.timedelta(seconds=1)


@pytest.mark.parametrize(
    ("value", "delta", "ms", "expected"),
    [
        (T0, _SECOND, 500, at(1.5)),  # inside the calendar: the exact sum of both parts
        (T0, -_SECOND, 250, at(-0.75)),
        (T0, dt.timedelta(0), -2000, at(-2)),
        (LATEST, dt.timedelta(0), 1, LATEST),  # one millisecond past the end
        (LATEST, -_SECOND, 10**30, LATEST),  # the duration alone is too large: its sign decides
        (EARLIEST, dt.timedelta(0), -1, EARLIEST),
        (EARLIEST, -_SECOND, 0, EARLIEST),
        (EARLIEST, _SECOND, -(10**30), EARLIEST),
    ],
)
def test_saturating_add_holds_at_the_edges(
    value: dt.datetime, delta: dt.timedelta, ms: int, expected: dt.datetime
) -> None:
    assert saturating_add(value, delta, milliseconds=ms) == expected


def test_a_resumed_manual_clock_may_go_back_and_names_its_key() -> None:
    clock = ManualClock(at(100))
    resume_manual_clock(clock, at(5))
    assert clock.now() == at(5)
    with pytest.raises(InvalidInputError) as info:
        resume_manual_clock(clock, dt.datetime(2026, 7, 1))
    assert (info.value.key, info.value.message) == (
        "clock",
        "clock must be timezone-aware, got the naive datetime 2026-07-01T00:00:00",
    )
    assert clock.now() == at(5)
