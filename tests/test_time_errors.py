"""Every rejection of ``workstate._time`` in full: status, key, expected, got and message.

Mutation testing showed the time module's error fields unguarded (a wrong key or a lost
``expected`` passed every other test); these pin each one exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from helpers import T0

from workstate import InvalidInputError, ManualClock, ensure_utc, format_time, parse_time
from workstate._time import to_pendulum

ACCEPTED = "an RFC 3339 timestamp with an offset, e.g. 2026-07-01T08:15:06.120394Z"
AWARE = "a timezone-aware datetime"
NAIVE = dt.datetime(2026, 7, 1, 8, 15)
WEST = dt.timezone(dt.timedelta(hours=-1))
LATE_WEST = dt.datetime(9999, 12, 31, 23, 30, tzinfo=WEST)


def clock() -> ManualClock:
    return ManualClock(T0)


CASES: list[tuple[str, Callable[[], object], str, str, object, str]] = [
    ("ensure_utc type", lambda: ensure_utc("x"), "now", AWARE, "x",
     "now must be a timezone-aware datetime, got str"),
    ("ensure_utc naive", lambda: ensure_utc(NAIVE, name="at"), "at", AWARE, NAIVE,
     "at must be timezone-aware, got the naive datetime 2026-07-01T08:15:00"),
    ("ensure_utc overflow", lambda: ensure_utc(LATE_WEST, name="at"), "at",
     "a time between 0001-01-01 and 9999-12-31 in UTC", LATE_WEST,
     "at lies outside the years 1-9999 once moved to UTC: 9999-12-31T23:30:00-01:00"),
    ("format_time", lambda: format_time(NAIVE), "value", AWARE, NAIVE,
     "value must be timezone-aware, got the naive datetime 2026-07-01T08:15:00"),
    ("to_pendulum", lambda: to_pendulum(NAIVE), "value", AWARE, NAIVE,
     "value must be timezone-aware, got the naive datetime 2026-07-01T08:15:00"),
    ("parse_time type", lambda: parse_time(5, key="k"), "k", ACCEPTED, 5,
     f"k must be a string holding {ACCEPTED}, got int"),
    ("parse_time naive", lambda: parse_time("2026-07-01T08:15:00", key="k"), "k", ACCEPTED,
     "2026-07-01T08:15:00", f"k has no UTC offset: '2026-07-01T08:15:00'; expected {ACCEPTED}"),
    ("parse_time junk", lambda: parse_time("soon"), "timestamp", ACCEPTED, "soon",
     f"timestamp is not an RFC 3339 timestamp: 'soon'; expected {ACCEPTED}"),
    ("parse_time invalid", lambda: parse_time("2026-13-01T00:00:00Z", key="k"), "k", ACCEPTED,
     "2026-13-01T00:00:00Z", "k is not a valid timestamp: '2026-13-01T00:00:00Z' (month must "
     f"be in 1..12); expected {ACCEPTED}"),
    ("clock start", lambda: ManualClock(NAIVE), "start", AWARE, NAIVE,
     "start must be timezone-aware, got the naive datetime 2026-07-01T08:15:00"),
    ("advance negative", lambda: clock().advance(-1), "advance_seconds", "a finite number >= 0",
     -1, "advance_seconds must be a finite number >= 0, got -1"),
    ("advance inf", lambda: clock().advance(float("inf")), "advance_seconds",
     "a finite number >= 0", float("inf"), "advance_seconds must be a finite number >= 0, got inf"),
    ("advance bool", lambda: clock().advance(True), "advance_seconds", "a finite number >= 0",
     True, "advance_seconds must be a finite number >= 0, got True"),
    ("advance overflow", lambda: ManualClock(dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.UTC))
     .advance(120), "advance_seconds", "at most 60", 120,
     "advance_seconds 120 would move the clock past the year 9999"),
    ("set naive", lambda: clock().set(NAIVE), "now", AWARE, NAIVE,
     "now must be timezone-aware, got the naive datetime 2026-07-01T08:15:00"),
    ("set backwards", lambda: clock().set(T0 - dt.timedelta(microseconds=1)), "now",
     "a time at or after 2026-07-01T08:15:00.000000Z", "2026-07-01T08:14:59.999999Z",
     "the clock never moves backwards: 2026-07-01T08:14:59.999999Z is earlier than "
     "2026-07-01T08:15:00.000000Z"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "key", "expected", "got", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_each_rejection_in_full(
    call: Callable[[], object], key: str, expected: str, got: Any, message: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        call()
    error = info.value
    assert (error.status, error.error_type) == (400, "invalid_request_error")
    assert (error.key, error.expected, error.message) == (key, expected, message)
    assert error.got == got
    assert type(error.got) is type(got)


def test_a_clock_moves_by_zero_and_by_fractions_and_may_be_set_to_now() -> None:
    c = clock()
    assert c.advance(0) == T0
    assert c.advance(0.5) == T0 + dt.timedelta(seconds=0.5)
    assert c.set(c.now()) == T0 + dt.timedelta(seconds=0.5)  # not earlier: accepted
